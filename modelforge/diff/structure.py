"""Structural comparison of two ONNX models: inputs/outputs, IR and opsets, producer,
metadata_props, op histogram, parameters, external data. Works on ModelProto objects
(external data is never loaded: sizes come from dims and element types)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from modelforge.model.checks.graph import walk_graphs

if TYPE_CHECKING:
    from onnx import ModelProto, TensorProto

    from modelforge.model.schema import ModelSchema, TensorSpec

_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8}
_ITEM_BYTES.update({14: 8, 15: 16, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1})


def _dims(shape: list[Any] | None) -> list[Any] | None:
    """Symbolic and unknown dims compare equal to each other (names are not semantics)."""
    return None if shape is None else [d if isinstance(d, int) else "?" for d in shape]


def _spec_dict(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "type": spec.type, "shape": spec.shape}


def _io_changes(side: str, a: list[TensorSpec], b: list[TensorSpec]) -> list[dict[str, Any]]:
    names_a = [s.name for s in a]
    names_b = [s.name for s in b]
    pairs: list[tuple[TensorSpec, TensorSpec]] = []
    changes: list[dict[str, Any]] = []
    for sa, sb in zip(a, b, strict=False):  # same position, new name: a rename
        if sa.name != sb.name and sa.name not in names_b and sb.name not in names_a:
            changes.append({"kind": f"{side}_renamed", "name": sa.name, "a": sa.name, "b": sb.name})
            pairs.append((sa, sb))
    renamed_a = {p[0].name for p in pairs}
    renamed_b = {p[1].name for p in pairs}
    by_b = {s.name: s for s in b}
    for sa in a:
        if sa.name in renamed_a:
            continue
        if sa.name in by_b:
            pairs.append((sa, by_b[sa.name]))
        else:
            changes.append(
                {"kind": f"{side}_removed", "name": sa.name, "a": _spec_dict(sa), "b": None}
            )
    for sb in b:
        if sb.name not in names_a and sb.name not in renamed_b:
            changes.append(
                {"kind": f"{side}_added", "name": sb.name, "a": None, "b": _spec_dict(sb)}
            )
    for sa, sb in pairs:
        if sa.type != sb.type:
            changes.append(
                {"kind": f"{side}_dtype_changed", "name": sb.name, "a": sa.type, "b": sb.type}
            )
        if _dims(sa.shape) != _dims(sb.shape):
            changes.append(
                {"kind": f"{side}_shape_changed", "name": sb.name, "a": sa.shape, "b": sb.shape}
            )
    return changes


def schema_changes(a: ModelSchema, b: ModelSchema) -> list[dict[str, Any]]:
    return _io_changes("input", a.inputs, b.inputs) + _io_changes("output", a.outputs, b.outputs)


def op_histogram(model: ModelProto) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for g, *_ in walk_graphs(model):
        for node in g.node:
            domain = node.domain if node.domain not in ("", "ai.onnx") else ""
            counts[f"{domain}:{node.op_type}" if domain else node.op_type] += 1
    for fn in model.functions:
        for node in fn.node:
            counts[f"{fn.domain}:{fn.name}/{node.op_type}"] += 1
    return dict(sorted(counts.items()))


def _tensor_numbers(t: TensorProto) -> tuple[int, int]:
    count = 1
    for d in t.dims:
        count *= int(d)
    if t.data_type == 8:  # strings
        return count, sum(len(s) for s in t.string_data)
    return count, count * _ITEM_BYTES.get(t.data_type, 0)


def parameters(model: ModelProto) -> dict[str, int]:
    tensors = 0
    count = 0
    size = 0
    for g, *_ in walk_graphs(model):
        inits = list(g.initializer) + [s.values for s in g.sparse_initializer]
        for t in inits:
            n, b = _tensor_numbers(t)
            tensors += 1
            count += n
            size += b
    return {"tensors": tensors, "count": count, "bytes": size}


def _initializers(model: ModelProto) -> dict[str, TensorProto]:
    out: dict[str, TensorProto] = {}
    for g, *_ in walk_graphs(model):
        for t in g.initializer:
            out.setdefault(t.name, t)
    return out


def _is_external(t: TensorProto) -> bool:
    return t.data_location == 1 or any(e.key == "location" for e in t.external_data)


def _same_tensor(a: TensorProto, b: TensorProto) -> bool:
    """Same dtype, dims and values (embedded tensors; the encoding may differ: raw_data in
    one, typed fields in the other)."""
    if a.data_type != b.data_type or list(a.dims) != list(b.dims):
        return False
    if a.raw_data and b.raw_data:
        return a.raw_data == b.raw_data
    if a.SerializeToString() == b.SerializeToString():
        return True
    import numpy as np
    from onnx import numpy_helper

    x, y = numpy_helper.to_array(a), numpy_helper.to_array(b)
    return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))


def _nodes_with_other_attributes(a: ModelProto, b: ModelProto) -> list[str]:
    """Main-graph nodes, paired in order when both graphs have the same op sequence, whose
    attributes differ: where scikit-learn models keep what training learned (the
    coefficients of LinearClassifier, the trees of TreeEnsemble*). Subgraphs are not
    compared here."""
    na, nb = list(a.graph.node), list(b.graph.node)
    if [n.op_type for n in na] != [n.op_type for n in nb]:
        return []
    out = []
    for x, y in zip(na, nb, strict=True):
        ax = [t.SerializeToString() for t in x.attribute if not (t.HasField("g") or t.graphs)]
        ay = [t.SerializeToString() for t in y.attribute if not (t.HasField("g") or t.graphs)]
        if sorted(ax) != sorted(ay):
            out.append(x.op_type if x.name in ("", x.op_type) else f"{x.op_type} {x.name}")
    return out


def weights(a: ModelProto, b: ModelProto) -> dict[str, Any]:
    """Initializers present in both models (by name) whose values differ: a model retrained
    with the same architecture has the same ops and parameter count, and only this shows
    it. External tensors are never loaded, so they are counted as not compared."""
    ta, tb = _initializers(a), _initializers(b)
    common = [n for n in ta if n in tb]
    changed: list[str] = []
    external = 0
    for name in common:
        x, y = ta[name], tb[name]
        if _is_external(x) or _is_external(y):
            external += 1
        elif not _same_tensor(x, y):
            changed.append(name)
    nodes = _nodes_with_other_attributes(a, b)
    return {
        "nodes_changed": len(nodes),
        "nodes": nodes[:20],
        "compared": len(common) - external,
        "changed_count": len(changed),
        "changed": changed[:20],
        "external_not_compared": external,
        "only_a": sum(1 for n in ta if n not in tb),
        "only_b": sum(1 for n in tb if n not in ta),
    }


def external_files(model: ModelProto) -> list[str]:
    found = set()
    for g, *_ in walk_graphs(model):
        for t in g.initializer:
            for entry in t.external_data:
                if entry.key == "location":
                    found.add(entry.value)
    return sorted(found)


def _opsets(model: ModelProto) -> dict[str, int]:
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}


def _delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "added": {k: b[k] for k in b if k not in a},
        "removed": {k: a[k] for k in a if k not in b},
        "changed": {k: [a[k], b[k]] for k in a if k in b and a[k] != b[k]},
    }


def structure(a: ModelProto, b: ModelProto) -> dict[str, Any]:
    """Everything but the inputs/outputs (see :func:`schema_changes`)."""
    ops_a, ops_b = op_histogram(a), op_histogram(b)
    ops_delta = {
        k: ops_b.get(k, 0) - ops_a.get(k, 0)
        for k in sorted(set(ops_a) | set(ops_b))
        if ops_b.get(k, 0) != ops_a.get(k, 0)
    }
    pa, pb = parameters(a), parameters(b)
    ea, eb = external_files(a), external_files(b)
    oa, ob = _opsets(a), _opsets(b)
    meta_a = {p.key: p.value for p in a.metadata_props}
    meta_b = {p.key: p.value for p in b.metadata_props}
    return {
        "ir_version": {"a": int(a.ir_version), "b": int(b.ir_version)},
        "opsets": {"a": oa, "b": ob, **_delta(oa, ob)},
        "producer": {
            "a": f"{a.producer_name} {a.producer_version}".strip(),
            "b": f"{b.producer_name} {b.producer_version}".strip(),
        },
        "metadata_props": _delta(meta_a, meta_b),
        "ops": {"a": ops_a, "b": ops_b, "delta": ops_delta},
        "parameters": {"a": pa, "b": pb, "delta": {k: pb[k] - pa[k] for k in pa}},
        "weights": weights(a, b),
        "external_data": {
            "a": ea,
            "b": eb,
            "added": [f for f in eb if f not in ea],
            "removed": [f for f in ea if f not in eb],
        },
    }


def structure_changed(s: dict[str, Any]) -> list[str]:
    """Names of the structural sections that differ (informational: they never fail)."""
    out = []
    if s["ir_version"]["a"] != s["ir_version"]["b"]:
        out.append("ir_version")
    for key in ("opsets", "metadata_props"):
        if any(s[key][k] for k in ("added", "removed", "changed")):
            out.append(key)
    if s["producer"]["a"] != s["producer"]["b"]:
        out.append("producer")
    if s["ops"]["delta"]:
        out.append("ops")
    if any(s["parameters"]["delta"].values()):
        out.append("parameters")
    if s["external_data"]["added"] or s["external_data"]["removed"]:
        out.append("external_data")
    if s["weights"]["changed_count"] or s["weights"]["nodes_changed"]:
        out.append("weights")
    return out
