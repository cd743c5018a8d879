"""OIP inference responses: JSON, or a JSON header followed by binary tensor data."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelforge.serve.protocol import BINARY_ONLY, bad_request, clip

if TYPE_CHECKING:
    import numpy as np

    from modelforge.serve.codec import Wanted


@dataclass
class Encoded:
    body: bytes
    header_length: int | None  # Inference-Header-Content-Length when binary parts follow


def tensor_bytes(datatype: str, arr: np.ndarray) -> bytes:
    """Little-endian, row-major bytes; BYTES as 4-byte LE length + UTF-8 per element."""
    import numpy as np

    if datatype == "BYTES":
        parts: list[bytes] = []
        for v in arr.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.tobytes()


def _json_data(name: str, datatype: str, arr: np.ndarray) -> Any:
    import numpy as np

    if datatype in BINARY_ONLY:
        raise bad_request(
            f"output '{clip(name)}' is {datatype}, which JSON cannot carry; request it as "
            "binary (outputs[].parameters.binary_data: true, or binary_data_output: true)"
        )
    if datatype == "BYTES":
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in arr.reshape(-1)
        ]
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return _NonFinite(flat.tolist())
    return flat


class _NonFinite(list):  # type: ignore[type-arg]
    """Float data with NaN/Inf: written as the NaN/Infinity tokens Python's json accepts
    (orjson would silently write null)."""


def encode_response(
    model: str,
    version: str,
    request_id: str | None,
    outputs: list[tuple[Wanted, np.ndarray, list[Any] | None]],
    *,
    parameters: dict[str, Any] | None = None,
) -> Encoded:
    import orjson

    head_outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    non_finite = False
    for want, arr, labels in outputs:
        port = want.port
        entry: dict[str, Any] = {
            "name": port.name,
            "datatype": port.datatype,
            "shape": list(arr.shape),
        }
        params: dict[str, Any] = {}
        if labels is not None:
            params["labels"] = [v.item() if hasattr(v, "item") else v for v in labels]
        if want.binary:
            blob = tensor_bytes(port.datatype, arr)
            params["binary_data_size"] = len(blob)
            blobs.append(blob)
        else:
            data = _json_data(port.name, port.datatype, arr)
            non_finite = non_finite or isinstance(data, _NonFinite)
            entry["data"] = data
        if params:
            entry["parameters"] = params
        head_outputs.append(entry)
    head: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        head["id"] = request_id
    if parameters:
        head["parameters"] = parameters
    head["outputs"] = head_outputs
    if non_finite:
        import json

        text = json.dumps(head, default=lambda o: o.tolist(), separators=(",", ":"))
        header = text.encode("utf-8")
    else:
        header = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return Encoded(header, None)
    return Encoded(header + b"".join(blobs), len(header))


def dumps(obj: Any) -> bytes:
    import orjson

    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
