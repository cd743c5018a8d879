"""Opset imports: one stable way to list and show them, the default-domain opset, and the
one wrapper around ``onnx.version_converter`` (used by ``convert`` and by predict's
in-memory upgrade).

Everywhere opsets are shown the default domain comes first and is named ``ai.onnx``, then
the other domains in alphabetical order: ``ai.onnx 21, ai.onnx.ml 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelforge.errors import InvalidModelError
from modelforge.text import safe

if TYPE_CHECKING:
    from onnx import ModelProto

DEFAULT_DOMAIN = "ai.onnx"


def domain_name(domain: str) -> str:
    """The displayed name of a domain ("" is ``ai.onnx``)."""
    return DEFAULT_DOMAIN if domain in ("", DEFAULT_DOMAIN) else domain


def _order(domain: str) -> tuple[int, str]:
    return (0, "") if domain == DEFAULT_DOMAIN else (1, domain)


def ordered_opsets(opsets: Mapping[str, Any]) -> dict[str, int]:
    """``opsets`` keyed by displayed domain name, default domain first, then alphabetical."""
    named = {domain_name(d): int(v) for d, v in opsets.items()}
    return {d: named[d] for d in sorted(named, key=_order)}


def opset_imports(model: ModelProto) -> dict[str, int]:
    """The model's opset imports in the stable order (a repeated domain keeps its first)."""
    out: dict[str, int] = {}
    for op in model.opset_import:
        out.setdefault(domain_name(op.domain), int(op.version))
    return ordered_opsets(out)


def format_opsets(opsets: Mapping[str, Any]) -> str:
    """``ai.onnx 21, ai.onnx.ml 1`` (escaped); ``-`` when there are none."""
    ordered = ordered_opsets(opsets)
    return ", ".join(f"{safe(d, 60)} {v}" for d, v in ordered.items()) or "-"


def default_opset(model: ModelProto) -> int:
    """The ai.onnx opset the model imports; 0 when it imports none."""
    for op in model.opset_import:
        if op.domain in ("", DEFAULT_DOMAIN):
            return int(op.version)
    return 0


def require_default_opset(model: ModelProto) -> int:
    found = default_opset(model)
    if not found:
        raise InvalidModelError(
            "the model imports no ai.onnx opset, so there is nothing to convert",
            code="no_default_opset",
        )
    return found


def _with_concrete_dims(model: ModelProto) -> ModelProto:
    """A copy whose symbolic dims are distinct concrete sizes (one per name).

    Some version-converter adapters (Add/Mul 6 -> 7 broadcasting) insist on integer dims;
    distinct odd sizes keep equal names equal and different names different (pinning every
    dim to 1 would make unrelated dims look broadcastable).
    """
    copy = type(model)()
    copy.CopyFrom(model)
    sizes: dict[str, int] = {}
    for vi in [*copy.graph.input, *copy.graph.output, *copy.graph.value_info]:
        if not vi.type.HasField("tensor_type"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                key = d.dim_param or f"?{len(sizes)}"
                d.dim_value = sizes.setdefault(key, 1009 + 2 * len(sizes))
    return copy


def _restore_io_types(converted: ModelProto, original: ModelProto) -> None:
    by_name = {vi.name: vi for vi in [*original.graph.input, *original.graph.output]}
    for vi in [*converted.graph.input, *converted.graph.output]:
        if vi.name in by_name:
            vi.type.CopyFrom(by_name[vi.name].type)
    del converted.graph.value_info[:]


def convert_version(model: ModelProto, target: int) -> ModelProto:
    """``onnx.version_converter.convert_version``; when an adapter trips over symbolic
    dims, convert a copy whose symbolic dims are concrete and put the original input and
    output types back. Raises whatever the converter raises (RuntimeError, ValueError...)."""
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, target)
    except Exception as first:  # the converter raises plain RuntimeError / ValueError
        try:
            converted = version_converter.convert_version(_with_concrete_dims(model), target)
        except Exception:
            raise first from None
        _restore_io_types(converted, model)
    _drop_untyped_value_info(converted)
    _drop_stale_noop_with_empty_axes(converted, target)
    return converted


def _graphs(graph: Any) -> list[Any]:
    out = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                out.extend(_graphs(attr.g))
            out.extend(g for sub in attr.graphs for g in _graphs(sub))
    return out


def _drop_stale_noop_with_empty_axes(model: ModelProto, target: int) -> None:
    """onnx's Reduce* downgrade adapters (18 -> 17, ReduceSum 13 -> 12) move ``axes`` from
    an input back to an attribute but keep ``noop_with_empty_axes``, which the older ops do
    not have, so onnx.checker and onnxruntime refuse the result (PyTorch's dynamo exporter
    always writes that attribute). The attribute only matters when there are no axes: it is
    dropped when it is 0 (the default: reduce over all axes, which is what the old op does
    without axes) or when the node has explicit axes; a node reducing nothing with
    ``noop_with_empty_axes=1`` keeps it (the old op has no way to say that)."""
    from onnx import defs

    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.domain not in ("", DEFAULT_DOMAIN) or not node.op_type.startswith("Reduce"):
                continue
            attrs = {a.name: a for a in node.attribute}
            stale = attrs.get("noop_with_empty_axes")
            if stale is None:
                continue
            try:
                schema = defs.get_schema(node.op_type, target, "")
            except Exception:  # onnx raises SchemaError for unknown ops
                continue
            if "noop_with_empty_axes" in schema.attributes:
                continue
            has_axes = "axes" in attrs and len(attrs["axes"].ints) > 0
            if stale.i == 0 or has_axes:
                kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
                del node.attribute[:]
                node.attribute.extend(kept)


def _drop_untyped_value_info(model: ModelProto) -> None:
    """Adapters that insert nodes (Add 6 -> 7 adds an Unsqueeze) may record the new value
    with element type 0 (undefined), which onnxruntime refuses ("Invalid tensor data type
    0"); such an entry says nothing, so it is dropped."""
    kept = [
        vi
        for vi in model.graph.value_info
        if not (vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == 0)
    ]
    if len(kept) != len(model.graph.value_info):
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
