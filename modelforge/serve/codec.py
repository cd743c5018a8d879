"""OIP inference requests and responses: JSON and the binary tensor data extension.

Decoding never trusts the client: every count, size and offset is checked, and every
message names the input or output it is about. Tensors are checked against the model's
ports (:mod:`.checks`) before they reach onnxruntime; :mod:`.tensors` turns their
data into arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.serve.checks import check_tensor, check_together, expected_shape
from modelforge.serve.protocol import OIP_SIZE, bad_request, clip
from modelforge.serve.tensors import from_bytes, from_json

if TYPE_CHECKING:
    import numpy as np

    from modelforge.serve.models import Port


@dataclass
class Wanted:
    """One requested output: its port and whether it goes back binary."""

    port: Port
    binary: bool


@dataclass
class Request:
    """A decoded, checked inference request."""

    id: str | None
    feeds: dict[str, np.ndarray]
    wanted: list[Wanted]
    rows: int  # dim 0 of the inputs (1 for scalars)
    parameters: dict[str, Any] = field(default_factory=dict)


def _loads(data: bytes | memoryview) -> Any:
    import orjson

    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if not len(data):
            raise bad_request(
                "the request has no body (a request without Content-Length or "
                "Transfer-Encoding: chunked has none, also in HTTP/1.0); send the JSON "
                "inference request as its body"
            ) from None
        hint = ""
        at = bytes(data[exc.pos : exc.pos + 9]).lstrip(b"-")  # where the parser stopped
        if at.startswith((b"NaN", b"Infinity")):
            hint = (
                " (NaN and Infinity are not JSON: send non-finite values as binary tensor "
                "data, parameters.binary_data_size)"
            )
        raise bad_request(f"the request body is not valid JSON: {clip(exc, 160)}{hint}") from None


def decode_http(
    body: bytes, header_length: str | None, inputs: list[Port], outputs: list[Port]
) -> Request:
    """Decode an HTTP infer body (``Inference-Header-Content-Length`` given or not)."""
    if header_length is None:
        return decode_json(_loads(body), memoryview(b""), inputs, outputs)
    # ASCII digits only: int() would also take " 5", "+5", "1_0" and other scripts' digits
    plain = header_length.isascii() and header_length.isdigit()
    if not plain:
        raise bad_request(
            f"Inference-Header-Content-Length '{clip(header_length)}' is not a non-negative integer"
        )
    digits = header_length.lstrip("0") or "0"  # int() refuses past 4,300 digits
    hlen = int(digits) if len(digits) <= 18 else len(body) + 1
    if hlen > len(body):
        raise bad_request(
            f"Inference-Header-Content-Length is {clip(digits)} but the body has only "
            f"{len(body)} bytes"
        )
    if hlen == 0:
        return decode_raw(body, inputs, outputs)
    view = memoryview(body)
    return decode_json(_loads(view[:hlen]), view[hlen:], inputs, outputs)


def decode_raw(body: bytes, inputs: list[Port], outputs: list[Port]) -> Request:
    """``Inference-Header-Content-Length: 0``: the body is the single input's raw bytes."""

    if len(inputs) != 1:
        raise bad_request(
            f"a raw binary body (Inference-Header-Content-Length: 0) needs a model with one "
            f"input; this one has {len(inputs)} ({', '.join(clip(p.name) for p in inputs)})"
        )
    port = inputs[0]
    size = OIP_SIZE.get(port.datatype)
    variable = [i for i, d in enumerate(port.shape) if d < 0]
    if size is None or len(variable) > 1:
        raise bad_request(
            f"input '{clip(port.name)}' ({port.datatype} {port.shape}) cannot be sent as a raw "
            "body: it needs a fixed-size datatype and at most one variable dimension"
        )
    fixed = math.prod(d for d in port.shape if d >= 0) * size
    if fixed == 0 or len(body) % fixed:
        raise bad_request(
            f"the raw body has {len(body)} bytes, not a multiple of the {fixed} bytes one "
            f"row of input '{clip(port.name)}' takes"
        )
    shape = [d if d >= 0 else len(body) // fixed for d in port.shape]
    if not variable and len(body) != fixed:
        raise bad_request(f"input '{clip(port.name)}' takes {fixed} bytes; got {len(body)}")
    arr = from_bytes(port.name, "BF16" if port.datatype == "BF16" else port.datatype, body, shape)
    feeds = {port.name: arr}
    return Request(None, feeds, [Wanted(p, True) for p in outputs], check_together(feeds, inputs))


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


MAX_RANK = 32
# the product of a shape's non-zero dimensions: numpy cannot even describe an empty array
# past 2**63 bytes (8-byte elements), so [0, 2**62, 2**62] must be refused before reshape
MAX_ELEMENTS = 2**59


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise bad_request(
            f"input '{clip(name)}' needs a 'shape' that is a list of non-negative integers; "
            f"got {clip(value)}"
        )
    return check_shape(name, value)


def check_shape(name: str, shape: list[int]) -> list[int]:
    """Rank and size limits of a client's (non-negative) shape, before any array is made."""
    if len(shape) > MAX_RANK:
        raise bad_request(f"input '{clip(name)}' has {len(shape)} dimensions; at most {MAX_RANK}")
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise bad_request(
            f"input '{clip(name)}' has shape {clip(shape)}, whose dimensions (zeros aside) "
            f"multiply past {MAX_ELEMENTS} elements; send the tensor's real shape"
        )
    return shape


def parameters_object(value: Any, where: str, name: str | None = None) -> dict[str, Any]:
    """A ``parameters`` field: absent/null or a JSON object (``[]``, ``0``, ``""`` are not).
    ``where`` (and the tensor's ``name``) only go into the message, built on failure."""
    if type(value) is dict:
        return value
    if value is None:
        return {}
    if not isinstance(value, dict):
        if name is not None:
            where = f"{where} '{clip(name)}'"
        raise bad_request(f"'parameters' of {where} must be an object; got {clip(value)}")
    return value


# Triton parameters whose answer this server cannot give: refused, never silently ignored
_SHM = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def refuse_unsupported(keys: Any, kind: str, name: str) -> None:
    """An input's or output's parameters asking for a Triton extension this server does not
    implement (shared memory; classification on outputs) are a 400 naming the tensor:
    ignoring them would hand the client an answer it did not ask for."""
    for key in keys:
        if key in _SHM:
            raise bad_request(
                f"{kind} '{clip(name)}' uses shared memory ({key}): this server does not implement "
                "Triton's shared-memory extensions; send the tensor in the request (JSON 'data' or "
                "binary tensor data) and read it from the response"
            )
        if key == "classification" and kind == "output":
            raise bad_request(
                f"output '{clip(name)}' asks for classification (class_count): this server "
                "does not implement Triton's classification extension; request the tensor "
                "itself and take the top classes on the client"
            )


def decode_json(head: Any, blobs: memoryview, inputs: list[Port], outputs: list[Port]) -> Request:
    head = _dict(head, "the request")
    raw_inputs = head.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_request("the request needs 'inputs': a non-empty list of tensors")
    ports = {p.name: p for p in inputs}
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(raw_inputs):
        item = _dict(item, f"inputs[{i}]")
        name = item.get("name")
        if not isinstance(name, str):
            raise bad_request(f"inputs[{i}] needs a 'name' (a string)")
        port = port_for(ports, feeds, name, item.get("datatype"))
        shape = _shape(item.get("shape"), name)
        params = parameters_object(item.get("parameters"), "input", name)
        if params:
            refuse_unsupported(params, "input", name)
        size = _binary_size(params, name, len(blobs) - offset)
        if size is not None and "data" in item:
            raise bad_request(
                f"input '{clip(name)}' has both 'data' and binary_data_size; give one of them"
            )
        if size is not None:
            arr = from_bytes(name, port.datatype, blobs[offset : offset + size], shape)
            offset += size
        elif "data" in item:
            arr = from_json(name, port.datatype, item["data"], shape)
        else:
            raise bad_request(f"input '{clip(name)}' has neither 'data' nor binary_data_size")
        check_tensor(port, arr)
        feeds[name] = arr
    if offset != len(blobs):
        raise bad_request(
            f"the body has {len(blobs) - offset} bytes of binary data that no input's "
            "binary_data_size accounts for"
        )
    rows = require_all(feeds, inputs)
    params = parameters_object(head.get("parameters"), "the request")
    binary = _flag(params, "binary_data_output", "the request's parameters")
    wanted = _wanted(head.get("outputs"), outputs, bool(binary))
    rid = head.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
        raise bad_request(f"the request's 'id' must be a string; got {clip(rid)}")
    return Request(None if rid is None else str(rid), feeds, wanted, rows, params)


def port_for(ports: dict[str, Port], feeds: dict[str, Any], name: str, datatype: Any) -> Port:
    """The port an input names, once, with the datatype the model expects."""
    port = ports.get(name)
    if port is None:
        raise bad_request(
            f"the model has no input '{clip(name)}' (inputs: {', '.join(clip(p) for p in ports)})"
        )
    if name in feeds:
        raise bad_request(f"input '{clip(name)}' is given twice")
    if not isinstance(datatype, str) or (datatype not in OIP_SIZE and datatype != "BYTES"):
        raise bad_request(
            f"input '{clip(name)}' has datatype '{clip(datatype)}', which is not an OIP "
            "datatype (BOOL, UINT8..64, INT8..64, FP16, FP32, FP64, BYTES, BF16)"
        )
    if datatype != port.datatype:
        raise bad_request(
            f"input '{clip(name)}' has datatype {datatype}; the model expects "
            f"{port.datatype} {expected_shape(port)}"
        )
    return port


def _binary_size(params: dict[str, Any], name: str, available: int) -> int | None:
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad_request(
            f"binary_data_size of input '{clip(name)}' must be a non-negative integer"
        )
    if size > available:
        raise bad_request(
            f"input '{clip(name)}' declares binary_data_size {size} but only {available} bytes "
            "of binary data follow the JSON header"
        )
    return int(size)


def require_all(feeds: dict[str, np.ndarray], inputs: list[Port]) -> int:
    """Every input is there and they agree on shared dimensions; returns the row count."""
    missing = [p.name for p in inputs if p.name not in feeds]
    if missing:
        raise bad_request(
            f"the request lacks input{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(clip(m)) for m in missing)} (the model takes: "
            f"{', '.join(clip(p.name) for p in inputs)})"
        )
    return check_together(feeds, inputs)


def _flag(params: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
    """A boolean parameter: JSON true/false only (the string "false" is not false)."""
    value = params.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{key} in {where} must be true or false; got {clip(value)}")
    return value


def _wanted(value: Any, outputs: list[Port], binary_default: bool) -> list[Wanted]:
    if value is None or value == []:  # an empty list asks for no subset: every output
        return [Wanted(p, binary_default) for p in outputs]
    if not isinstance(value, list):
        raise bad_request("'outputs' must be a list of {\"name\": ...} objects")
    ports = {p.name: p for p in outputs}
    out: list[Wanted] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        item = _dict(item, f"outputs[{i}]")
        name = item.get("name")
        if not isinstance(name, str):
            raise bad_request(f"outputs[{i}] needs a 'name' (a string)")
        port = ports.get(name)
        if port is None:
            raise bad_request(
                f"the model has no output '{clip(name)}' (outputs: "
                f"{', '.join(clip(p) for p in ports)})"
            )
        if name in seen:
            continue
        seen.add(port.name)
        params = parameters_object(item.get("parameters"), "output", name)
        if len(params) > 1 or (params and "binary_data" not in params):
            refuse_unsupported(params, "output", name)
        binary = params.get("binary_data")  # the common case without building a message
        if type(binary) is not bool:
            binary = _flag(params, "binary_data", f"output '{clip(name)}'", binary_default)
        out.append(Wanted(port, binary))
    return out
