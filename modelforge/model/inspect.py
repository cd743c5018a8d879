"""``inspect``: everything about a model file, fast — no onnxruntime, no external weights.

The file is parsed in-process with :func:`modelforge.model.load.load_model` (capped read,
never follows external data); external-data files are only ``stat``-ed through
:func:`check_external_data`. onnxruntime is never imported here.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from modelforge.model.checks.graph import walk_graphs
from modelforge.model.schema import extract_schema

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


def _initializer_stats(model: Any) -> dict[str, Any]:
    from modelforge.model.schema import elem_name

    count, params = 0, 0
    by_dtype: dict[str, dict[str, int]] = {}
    tensors = list(model.graph.initializer)
    tensors += [s.values for s in model.graph.sparse_initializer]
    for t in tensors:
        count += 1
        n = _numel(t.dims)
        params += n
        if t.data_type in _ITEMSIZE:
            nbytes = n * _ITEMSIZE[t.data_type]
        elif t.data_type in _PACKED_4BIT:
            nbytes = (n + 1) // 2
        else:
            nbytes = sum(len(s) for s in t.string_data)
        entry = by_dtype.setdefault(elem_name(t.data_type), {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += nbytes
    return {"count": count, "parameters": params, "by_dtype": by_dtype}


def inspect_model(model: str | os.PathLike[str], *, trusted: bool = False) -> ModelInspection:
    """Read and summarise a model file or store reference (never loads external weights)."""
    from modelforge.errors import ModelForgeError
    from modelforge.model.external import check_external_data
    from modelforge.model.files import read_capped
    from modelforge.model.load import parse_model_bytes
    from modelforge.store.resolve import resolve_model

    location = resolve_model(model)
    trusted = trusted or location.trusted
    path = location.path
    data = read_capped(path)  # one read: the hash and the parse see the same bytes
    proto = parse_model_bytes(data, str(path))
    digest, size = hashlib.sha256(data).hexdigest(), len(data)
    schema = extract_schema(proto)
    ops: dict[str, Counter[str]] = {}
    nodes, subgraphs = 0, 0
    for graph, depth, _outer, _label in walk_graphs(proto):
        subgraphs += 1 if depth else 0
        for node in graph.node:
            nodes += 1
            ops.setdefault(node.domain or "ai.onnx", Counter())[node.op_type] += 1
    for fn in proto.functions:
        for node in fn.node:
            ops.setdefault(node.domain or "ai.onnx", Counter())[node.op_type] += 1
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
        ref=location.display,
        path=str(path.absolute()),
        size=size,
        sha256=digest,
        ir_version=int(proto.ir_version),
        opset_import={(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import},
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
        ops={d: dict(c.most_common()) for d, c in sorted(ops.items())},
        node_count=nodes,
        subgraph_count=subgraphs,
        function_count=len(proto.functions),
        functions=[f"{fn.domain}::{fn.name}" for fn in proto.functions],
        external_data=external,
        external_data_error=ext_error,
        custom_domains=custom,
    )
