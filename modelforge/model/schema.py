"""Input/output schema of an ONNX model, read from the file itself.

Type strings follow onnxruntime's spelling (``tensor(float)``,
``seq(map(int64,tensor(float)))``, ``optional(tensor(int64))``,
``sparse_tensor(float)``) so they match what ``InferenceSession.get_inputs()`` reports.
Shapes keep symbolic dimension names: ``["N", 4]``; an unknown dimension is ``None``.

This module imports nothing heavy at import time: it works on ModelProto objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnx import ModelProto, TypeProto, ValueInfoProto

# TensorProto.DataType -> (onnx type name as onnxruntime spells it, numpy dtype name or None)
ELEM_TYPES: dict[int, tuple[str, str | None]] = {
    1: ("float", "float32"),
    2: ("uint8", "uint8"),
    3: ("int8", "int8"),
    4: ("uint16", "uint16"),
    5: ("int16", "int16"),
    6: ("int32", "int32"),
    7: ("int64", "int64"),
    8: ("string", "str"),
    9: ("bool", "bool"),
    10: ("float16", "float16"),
    11: ("double", "float64"),
    12: ("uint32", "uint32"),
    13: ("uint64", "uint64"),
    14: ("complex64", "complex64"),
    15: ("complex128", "complex128"),
    16: ("bfloat16", None),
    17: ("float8e4m3fn", None),
    18: ("float8e4m3fnuz", None),
    19: ("float8e5m2", None),
    20: ("float8e5m2fnuz", None),
    21: ("uint4", None),
    22: ("int4", None),
    23: ("float4e2m1", None),
}

Dim = int | str | None


def format_shape(shape: list[Dim] | tuple[Dim, ...] | None) -> str:
    """The one way shapes are shown: ``[N, 4]``; an unknown dim is ``?``, an unknown rank ``?``."""
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def elem_name(elem_type: int) -> str:
    return ELEM_TYPES.get(elem_type, (f"unknown({elem_type})", None))[0]


def elem_numpy(elem_type: int) -> str | None:
    return ELEM_TYPES.get(elem_type, ("", None))[1]


def _shape(tp: Any) -> list[Dim] | None:
    if not tp.HasField("shape"):
        return None  # rank unknown
    dims: list[Dim] = []
    for d in tp.shape.dim:
        which = d.WhichOneof("value")
        if which == "dim_value":
            dims.append(int(d.dim_value))
        elif which == "dim_param" and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def type_string(tp: TypeProto) -> str:
    """onnxruntime-style type string for any TypeProto (tensor, seq, map, optional, sparse)."""
    which = tp.WhichOneof("value")
    if which == "tensor_type":
        return f"tensor({elem_name(tp.tensor_type.elem_type)})"
    if which == "sparse_tensor_type":
        return f"sparse_tensor({elem_name(tp.sparse_tensor_type.elem_type)})"
    if which == "sequence_type":
        return f"seq({type_string(tp.sequence_type.elem_type)})"
    if which == "map_type":
        key = elem_name(tp.map_type.key_type)
        return f"map({key},{type_string(tp.map_type.value_type)})"
    if which == "optional_type":
        return f"optional({type_string(tp.optional_type.elem_type)})"
    return "unknown"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output."""

    name: str
    type: str  # e.g. "tensor(float)", "seq(map(int64,tensor(float)))"
    dtype: str | None  # numpy dtype name for tensors ("float32", "str"); None otherwise
    shape: list[Dim] | None  # None: rank unknown
    doc: str = ""

    @property
    def is_tensor(self) -> bool:
        return self.type.startswith("tensor(")

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def shape_str(self) -> str:
        return format_shape(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "dtype": self.dtype, "shape": self.shape}


@dataclass(frozen=True)
class ModelSchema:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # initializers listed among graph inputs (IR < 4 style): callers may override them
    overridable: list[TensorSpec] = field(default_factory=list)
    # integer inputs used as Gather indices into an initializer: input -> rows of the
    # smallest such table (token_type_ids -> 2), so synthesized indices stay in range
    index_bounds: dict[str, int] = field(default_factory=dict, compare=False)
    # inputs (or one column of a 2-D input, by index) read by a category-matching op
    # (ai.onnx.ml OneHotEncoder, LabelEncoder, CategoryMapper): the values it knows, so that
    # synthesized inputs are categories the model accepts (OneHotEncoder with zeros=0,
    # scikit-learn's default handle_unknown='error', fails on any other value)
    categories: dict[str, dict[int | None, list[Any]]] = field(default_factory=dict, compare=False)

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "overridable_initializers": [s.to_dict() for s in self.overridable],
        }


def spec_from_value_info(vi: ValueInfoProto) -> TensorSpec:
    tp = vi.type
    which = tp.WhichOneof("value")
    dtype = None
    shape = None
    if which == "tensor_type":
        dtype = elem_numpy(tp.tensor_type.elem_type)
        shape = _shape(tp.tensor_type)
    elif which == "sparse_tensor_type":
        shape = _shape(tp.sparse_tensor_type)
    return TensorSpec(
        name=vi.name, type=type_string(tp), dtype=dtype, shape=shape, doc=vi.doc_string
    )


def extract_schema(model: ModelProto) -> ModelSchema:
    """Inputs (without initializers), overridable initializers, and outputs of the graph."""
    g = model.graph
    init_names = {t.name for t in g.initializer} | {s.values.name for s in g.sparse_initializer}
    inputs: list[TensorSpec] = []
    overridable: list[TensorSpec] = []
    for vi in g.input:
        (overridable if vi.name in init_names else inputs).append(spec_from_value_info(vi))
    outputs = [spec_from_value_info(vi) for vi in g.output]
    names = {s.name for s in inputs}
    return ModelSchema(
        inputs=inputs,
        outputs=outputs,
        overridable=overridable,
        index_bounds=index_bounds(model, names),
        categories=known_categories(model, names),
    )


_PASS_THROUGH = frozenset({"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten"})


def index_bounds(model: ModelProto, names: set[str]) -> dict[str, int]:
    """For graph inputs that index an initializer through ``Gather`` (directly or through
    Cast/Reshape/Unsqueeze/Squeeze/Flatten/Identity), the size of the indexed axis of the
    smallest such initializer: embeddings (input_ids -> vocab, token_type_ids -> 2)."""
    g = model.graph
    tables = {t.name: list(t.dims) for t in g.initializer}
    origin: dict[str, str] = {n: n for n in names}  # value -> the graph input it comes from
    bounds: dict[str, int] = {}
    for node in g.node:  # nodes are topologically sorted in a valid graph
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in _PASS_THROUGH and node.input and node.input[0] in origin:
            for out in node.output[:1]:
                origin[out] = origin[node.input[0]]
        elif node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in origin:
            dims = tables.get(node.input[0])
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
            if dims and -len(dims) <= axis < len(dims) and dims[axis] > 0:
                src = origin[node.input[1]]
                bounds[src] = min(bounds.get(src, dims[axis]), int(dims[axis]))
    return bounds


_CATEGORY_ATTRS = {
    "OneHotEncoder": ("cats_strings", "cats_int64s"),
    "LabelEncoder": ("keys_strings", "keys_int64s", "keys_floats"),
    "CategoryMapper": ("cats_strings", "cats_int64s"),
}


def _attr_values(attr: Any) -> list[Any]:
    if attr.strings:
        return [v.decode("utf-8", "replace") for v in attr.strings]
    if attr.ints:
        return [int(v) for v in attr.ints]
    return [float(v) for v in attr.floats]


def _column(node: Any, tables: dict[str, Any]) -> int | None | bool:
    """The one column a ``Gather(x, [j], axis=1)`` selects (skl2onnx picks a column of a
    2-D input this way); False when the node is not such a selection."""
    axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
    index = tables.get(node.input[1]) if len(node.input) == 2 else None
    if axis != 1 or index is None or index.size != 1:
        return False
    return int(index.reshape(-1)[0])


def known_categories(model: ModelProto, names: set[str]) -> dict[str, dict[int | None, list[Any]]]:
    """For each graph input read (directly, through Cast/Reshape/... or through a one-column
    Gather) by an ai.onnx.ml OneHotEncoder, LabelEncoder or CategoryMapper: the categories
    that op knows, per selected column (None: the whole input)."""
    g = model.graph
    small = {t.name: v for t in g.initializer if (v := _small_array(t)) is not None}
    origin: dict[str, tuple[str, int | None]] = {n: (n, None) for n in names}
    found: dict[str, dict[int | None, list[Any]]] = {}
    for node in g.node:
        first = node.input[0] if node.input else ""
        if first not in origin or not node.output:  # (a malformed node: the checks say so)
            continue
        if node.domain in ("", "ai.onnx"):
            if node.op_type in _PASS_THROUGH:
                origin[node.output[0]] = origin[first]
            elif node.op_type == "Gather" and origin[first][1] is None:
                col = _column(node, small)
                if col is not False:
                    origin[node.output[0]] = (origin[first][0], col)  # type: ignore[assignment]
            continue
        attrs = _CATEGORY_ATTRS.get(node.op_type) if node.domain == "ai.onnx.ml" else None
        for attr in node.attribute if attrs else ():
            values = _attr_values(attr) if attr.name in attrs else []  # type: ignore[operator]
            if values:
                src, col = origin[first]
                found.setdefault(src, {}).setdefault(col, values)
                break
    return found


def _small_array(t: Any) -> Any:
    """The values of a small embedded initializer (a Gather index); None for big, external
    or malformed ones (the checks report those: this is only a hint for synthesis)."""
    count = 1
    for d in t.dims:
        count *= int(d)
    if t.external_data or not 0 < count <= 16:
        return None
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(t)
    except Exception:  # onnx raises ValueError/TypeError on tensors whose data and dims disagree
        return None
