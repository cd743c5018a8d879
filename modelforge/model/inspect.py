"""``inspect``: everything about a model file, fast — no onnxruntime, no external weights.

The file is opened with :func:`modelforge.model.open.open_model` (capped read, hashed,
never follows external data) and parsed in-process; external-data files are only
``stat``-ed through :func:`check_external_data`, and a problem with them is reported, not
raised. onnxruntime is never imported here.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.model.checks.graph import walk_graphs
from modelforge.model.opset import domain_name, opset_imports
from modelforge.model.schema import extract_schema

if TYPE_CHECKING:
    from modelforge.model.open import OpenedModel

LARGEST_SHOWN = 5  # initializers named one by one in the summary

# fixed bytes per element by TensorProto.DataType (strings: counted from their data)
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
             14: 8, 15: 16, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 23: 1}  # fmt: skip
_PACKED_4BIT = {21, 22, 25, 26}
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft"}


@dataclass(frozen=True)
class ModelInspection:
    ref: str  # what was asked for: a path, or NAME:VERSION for a store model
    path: str
    size: int
    sha256: str
    ir_version: int
    opset_import: dict[str, int]
    producer_name: str
    producer_version: str
    domain: str
    model_version: int
    graph_name: str
    doc_string: str
    metadata_props: dict[str, str]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    overridable_initializers: list[dict[str, Any]]
    initializers: dict[str, Any]
    ops: dict[str, dict[str, int]]  # domain -> op_type -> count
    node_count: int
    subgraph_count: int
    function_count: int
    functions: list[str]
    external_data: list[dict[str, Any]] = field(default_factory=list)
    external_data_error: str | None = None
    custom_domains: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _numel(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= max(int(d), 0)
    return n


def _tensor_bytes(t: Any) -> int:
    n = _numel(t.dims)
    if t.data_type in _ITEMSIZE:
        return n * _ITEMSIZE[t.data_type]
    if t.data_type in _PACKED_4BIT:
        return (n + 1) // 2
    return sum(len(s) for s in t.string_data)


def _initializer_stats(model: Any, largest: int = LARGEST_SHOWN) -> dict[str, Any]:
    """Count, parameters, bytes per dtype, total bytes and the ``largest`` biggest tensors
    (a DenseNet has ~900 initializers: they are summarised, never listed one by one)."""
    from modelforge.model.schema import elem_name

    count, params, total = 0, 0, 0
    by_dtype: dict[str, dict[str, int]] = {}
    sizes: list[tuple[int, str, str, list[int]]] = []
    tensors = list(model.graph.initializer)
    tensors += [s.values for s in model.graph.sparse_initializer]
    for t in tensors:
        count += 1
        params += _numel(t.dims)
        nbytes = _tensor_bytes(t)
        total += nbytes
        entry = by_dtype.setdefault(elem_name(t.data_type), {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += nbytes
        sizes.append((nbytes, t.name, elem_name(t.data_type), [int(d) for d in t.dims]))
    sizes.sort(key=lambda e: (-e[0], e[1]))
    return {
        "count": count,
        "parameters": params,
        "bytes": total,
        "by_dtype": by_dtype,
        "largest": [
            {"name": name, "dtype": dtype, "shape": dims, "bytes": nbytes}
            for nbytes, name, dtype, dims in sizes[:largest]
        ],
    }


def inspect_model(
    model: str | os.PathLike[str] | OpenedModel, *, trusted: bool = False, label: str | None = None
) -> ModelInspection:
    """Read and summarise a model file or an OpenedModel (never loads external weights).

    Store references are resolved by :func:`modelforge.inspect_model` (``modelforge.api``);
    ``label`` is what the report calls the model (default: its path).
    """
    from modelforge.errors import ModelForgeError
    from modelforge.model.external import check_external_data
    from modelforge.model.open import OpenedModel, open_model

    opened = (
        model
        if isinstance(model, OpenedModel)
        else open_model(model, trusted=trusted, auto_parse=False)
    )
    trusted = trusted or opened.trusted
    path = opened.path
    proto = opened.parse_unchecked()  # one read: the hash and the parse see the same bytes
    schema = extract_schema(proto)
    ops: dict[str, Counter[str]] = {}
    nodes, subgraphs = 0, 0
    for graph, depth, _outer, _label in walk_graphs(proto):
        subgraphs += 1 if depth else 0
        for node in graph.node:
            nodes += 1
            ops.setdefault(domain_name(node.domain), Counter())[node.op_type] += 1
    for fn in proto.functions:
        for node in fn.node:
            ops.setdefault(domain_name(node.domain), Counter())[node.op_type] += 1
    local_fn_domains = {fn.domain for fn in proto.functions}
    custom = sorted(d for d in ops if d not in STANDARD_DOMAINS and d not in local_fn_domains)
    external: list[dict[str, Any]] = []
    ext_error = None
    try:
        external = [
            f.to_dict() for f in check_external_data(proto, path.parent, allow_hardlinks=trusted)
        ]
    except ModelForgeError as err:
        ext_error = err.message
    return ModelInspection(
        ref=label or str(path),
        path=str(path),
        size=opened.size,
        sha256=opened.sha256,
        ir_version=int(proto.ir_version),
        opset_import=opset_imports(proto),
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        domain=proto.domain,
        model_version=int(proto.model_version),
        graph_name=proto.graph.name,
        doc_string=proto.doc_string,
        metadata_props={p.key: p.value for p in proto.metadata_props},
        inputs=[s.to_dict() for s in schema.inputs],
        outputs=[s.to_dict() for s in schema.outputs],
        overridable_initializers=[s.to_dict() for s in schema.overridable],
        initializers=_initializer_stats(proto),
        ops={d: dict(c.most_common()) for d, c in sorted(ops.items(), key=_domain_order)},
        node_count=nodes,
        subgraph_count=subgraphs,
        function_count=len(proto.functions),
        functions=[f"{fn.domain}::{fn.name}" for fn in proto.functions],
        external_data=external,
        external_data_error=ext_error,
        custom_domains=custom,
    )


def _domain_order(item: tuple[str, Any]) -> tuple[int, str]:
    return (0, "") if item[0] == "ai.onnx" else (1, item[0])
