"""gRPC ModelInferRequest/ModelInferResponse <-> the codec's checked :class:`Request`.

A gRPC request is checked exactly like an HTTP one (same functions, same messages): tensors
come from ``raw_input_contents`` (binary tensor bytes) or the typed ``contents`` fields.
"""

from __future__ import annotations

import json
import math
from typing import Any

from modelforge.serve.checks import check_tensor
from modelforge.serve.codec import (
    Request,
    Wanted,
    check_shape,
    port_for,
    refuse_unsupported,
    require_all,
)
from modelforge.serve.protocol import OIP_NUMPY, bad_request, clip
from modelforge.serve.tensors import from_bytes

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_grpc(request: Any, inputs: list[Any], outputs: list[Any]) -> Any:
    """ModelInferRequest -> codec.Request (raw_input_contents or typed contents), checked
    exactly like an HTTP request (same messages)."""
    for t in request.inputs:  # before counting raw contents: a shared-memory input has none
        if t.parameters:
            refuse_unsupported(t.parameters, "input", t.name)
    for o in request.outputs:
        if o.parameters:
            refuse_unsupported(o.parameters, "output", o.name)
    ports = {p.name: p for p in inputs}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise bad_request(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: "
            "once it is used, every input's bytes go there, in the order of 'inputs' (as "
            "Triton requires); or send every input in typed contents"
        )
    feeds: dict[str, Any] = {}
    for i, t in enumerate(request.inputs):
        port = port_for(ports, feeds, t.name, t.datatype)
        shape = [int(d) for d in t.shape]
        if any(d < 0 for d in shape):
            raise bad_request(f"input '{clip(t.name)}' has a negative dimension")
        check_shape(t.name, shape)
        if raw and t.contents.ListFields():
            raise bad_request(
                f"input '{clip(t.name)}' has typed contents although the request uses "
                "raw_input_contents; send every input one way"
            )
        arr = from_bytes(t.name, t.datatype, raw[i], shape) if raw else _from_contents(t, shape)
        check_tensor(port, arr)
        feeds[t.name] = arr
    rows = require_all(feeds, inputs)
    by_name = {p.name: p for p in outputs}
    wanted: list[Wanted] = []
    for o in request.outputs:
        if o.name not in by_name:
            raise bad_request(
                f"the model has no output '{clip(o.name)}' (outputs: "
                f"{', '.join(clip(p) for p in by_name)})"
            )
        if all(w.port.name != o.name for w in wanted):  # asked twice: answered once, as HTTP
            wanted.append(Wanted(by_name[o.name], True))
    if not wanted:
        wanted = [Wanted(p, True) for p in outputs]
    return Request(request.id, feeds, wanted, rows)


def _from_contents(t: Any, shape: list[int]) -> Any:
    """A tensor sent in the typed ``contents`` fields instead of raw bytes."""
    import numpy as np

    field = _CONTENTS.get(t.datatype)
    if field is None:
        raise bad_request(f"input '{clip(t.name)}' is {t.datatype}: send it in raw_input_contents")
    values = list(getattr(t.contents, field))
    others = [f.name for f, _ in t.contents.ListFields() if f.name != field]
    if others:  # Triton refuses contents in a field that is not the datatype's
        raise bad_request(
            f"input '{clip(t.name)}' is {t.datatype}: its values go in contents.{field}, "
            f"not {', '.join(others)}"
        )
    if t.datatype == "BYTES":
        try:
            arr = np.array([v.decode("utf-8") for v in values], dtype=object)
        except UnicodeDecodeError:
            raise bad_request(f"input '{clip(t.name)}' holds non-UTF-8 BYTES") from None
    else:
        try:  # numpy refuses a Python int outside the dtype (300 for UINT8)
            arr = np.asarray(values, dtype=OIP_NUMPY[t.datatype])
        except OverflowError:
            raise bad_request(
                f"input '{clip(t.name)}' holds values outside the {t.datatype} range"
            ) from None
    if arr.size != math.prod(shape):
        raise bad_request(
            f"input '{clip(t.name)}' has {arr.size} values but shape {shape} needs "
            f"{math.prod(shape)}"
        )
    return arr.reshape(shape)


def encode_grpc(pb: Any, request: Any, version: int, wanted: list[Wanted], result: Any) -> Any:
    """The ModelInferResponse for ``request``: every wanted output in raw_output_contents
    (ZipMap class labels in the output's ``labels`` parameter, as over HTTP)."""
    from modelforge.serve.encode import tensor_bytes

    resp = pb.ModelInferResponse(
        model_name=request.model_name, model_version=str(version), id=request.id
    )
    for w in wanted:
        arr, labels = result[w.port.name]
        out = resp.outputs.add(name=w.port.name, datatype=w.port.datatype, shape=list(arr.shape))
        if labels is not None:
            out.parameters["labels"].string_param = json.dumps(
                [v.item() if hasattr(v, "item") else v for v in labels]
            )
        resp.raw_output_contents.append(tensor_bytes(w.port.datatype, arr))
    return resp
