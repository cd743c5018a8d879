"""OIP inference requests and responses: JSON and the binary tensor data extension.

Decoding never trusts the client: every count, size and offset is checked, and every
message names the input or output it is about. Tensors are checked against the model's
ports (:mod:`.checks`) before they reach onnxruntime.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.serve.checks import check_tensor, check_together, expected_shape
from modelforge.serve.protocol import BINARY_ONLY, OIP_NUMPY, OIP_SIZE, bad_request, clip

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
    hlen = int(header_length) if plain else -1
    if hlen < 0:
        raise bad_request(
            f"Inference-Header-Content-Length '{clip(header_length)}' is not a non-negative integer"
        )
    if hlen > len(body):
        raise bad_request(
            f"Inference-Header-Content-Length is {hlen} but the body has only {len(body)} bytes"
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
    arr = _from_bytes(port.name, "BF16" if port.datatype == "BF16" else port.datatype, body, shape)
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
            arr = _from_bytes(name, port.datatype, blobs[offset : offset + size], shape)
            offset += size
        elif "data" in item:
            arr = _from_json(name, port.datatype, item["data"], shape)
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


def _from_bytes(name: str, datatype: str, data: Any, shape: list[int]) -> np.ndarray:
    import numpy as np

    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_bytes(name, bytes(data), shape, count)
    size = OIP_SIZE[datatype]
    if len(data) != count * size:
        raise bad_request(
            f"input '{clip(name)}' has {len(data)} bytes of binary data but shape {shape} "
            f"of {datatype} needs {count * size}"
        )
    # BF16 has no numpy dtype: its raw 16-bit patterns travel as uint16 (models.py hands
    # them to onnxruntime as bfloat16)
    dtype = np.dtype("<u2" if datatype == "BF16" else OIP_NUMPY[datatype]).newbyteorder("<")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and arr.size and int(arr.view(np.uint8).max()) > 1:
        raise bad_request(f"input '{clip(name)}' is BOOL but holds bytes other than 0 and 1")
    return arr


def _decode_bytes(name: str, data: bytes, shape: list[int], count: int) -> np.ndarray:
    import numpy as np

    items: list[str] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data) or len(items) >= count:
            break
        (n,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if pos + n > len(data):
            raise bad_request(
                f"BYTES element {len(items)} of input '{clip(name)}' declares {n} bytes but "
                f"only {len(data) - pos} remain"
            )
        try:
            items.append(data[pos : pos + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise bad_request(
                f"BYTES element {len(items)} of input '{clip(name)}' is not UTF-8 text (the "
                "model takes ONNX strings)"
            ) from None
        pos += n
    if len(items) != count or pos != len(data):
        raise bad_request(
            f"input '{clip(name)}' holds {len(items)} length-prefixed BYTES elements "
            f"({len(data) - pos} stray bytes) but shape {shape} needs {count}"
        )
    return np.array(items, dtype=object).reshape(shape)


_JSON_KINDS = {"f": (float, int), "i": (int,), "u": (int,), "b": (bool,)}


def _from_json(name: str, datatype: str, data: Any, shape: list[int]) -> np.ndarray:
    import numpy as np

    if datatype in BINARY_ONLY:
        raise bad_request(
            f"input '{clip(name)}' is {datatype}, which JSON cannot carry; send it as binary "
            "tensor data (parameters.binary_data_size; tritonclient does this by default)"
        )
    count = math.prod(shape)
    if datatype == "BYTES":
        arr = np.array(data if isinstance(data, list) else [data], dtype=object).reshape(-1)
        if not all(isinstance(v, str) for v in arr):
            raise bad_request(f"input '{clip(name)}' is BYTES: its data must be strings")
    else:
        dtype = np.dtype(OIP_NUMPY[datatype])
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError):
            depth = _depth(data, len(shape) + 2)
            if depth > max(1, len(shape)):
                raise bad_request(
                    f"input '{clip(name)}' data is nested {depth}"
                    f"{'+' if depth == len(shape) + 2 else ''} levels deep, but its shape "
                    f"{shape} has {len(shape)} dimension(s); send the values flat or nested "
                    "by the shape"
                ) from None
            raise bad_request(
                f"input '{clip(name)}' data is not a (nested) list of {datatype} numbers with "
                "the same length at each level"
            ) from None
        # numpy reads true/false among numbers as 1/0: _holds_bool looks at those values
        if dtype.kind in "fiu" and arr.dtype.kind in "iuf" and _holds_bool(data, arr):
            raise bad_request(
                f"input '{clip(name)}' is {datatype} but its data mixes true/false with "
                "numbers; send numbers only"
            )
        if dtype.kind == "f":
            arr = _floats(name, datatype, arr, dtype)
        else:
            if arr.dtype.kind in "fO" and dtype.kind in "iu":  # maybe ints past int64
                arr = _big_ints(name, datatype, data, dtype)
            if arr.size and arr.dtype.kind not in ("b" if dtype.kind == "b" else "iu"):
                raise bad_request(
                    f"input '{clip(name)}' is {datatype} but its data holds "
                    f"{'non-boolean' if dtype.kind == 'b' else 'non-integer'} values"
                )
            if arr.size and dtype.kind in "iu":
                info = np.iinfo(dtype)
                if int(arr.min()) < info.min or int(arr.max()) > info.max:
                    raise bad_request(
                        f"input '{clip(name)}' holds values outside the {datatype} range"
                    )
            arr = arr.astype(dtype, copy=False)
    if arr.size != count:
        raise bad_request(
            f"input '{clip(name)}' has {arr.size} values but shape {shape} needs {count}"
        )
    return arr.reshape(shape)


def _depth(data: Any, limit: int) -> int:
    """How deep lists nest along their first elements (at most ``limit``)."""
    depth = 0
    while isinstance(data, list) and depth < limit:
        depth += 1
        data = data[0] if data else None
    return depth


def _holds_bool(data: Any, arr: np.ndarray) -> bool:
    """Whether nested lists that numpy read as numbers (``arr``) hold a JSON true/false.

    numpy read a true/false as 1/0, so only values equal to 0 or 1 can have been one: a
    vectorized test finds them (~2 µs for 1,280 values), and only those are looked at
    (the type of every value costs ~14 ns each: 18 µs for a 64 x 20 request)."""
    import numpy as np

    if arr.ndim == 0:
        return type(data) is bool
    flat = arr.reshape(-1)
    suspects = np.flatnonzero((flat == 0) | (flat == 1))
    if not suspects.size:
        return False
    items: Any = data
    for _ in range(arr.ndim - 1):  # numpy accepted it: the nesting is regular, arr.ndim deep
        items = itertools.chain.from_iterable(items)
    if suspects.size * 8 >= flat.size:  # mostly 0/1 values: one pass over them all
        return bool in set(map(type, items))
    values = items if arr.ndim == 1 else list(items)
    return any(type(values[i]) is bool for i in suspects.tolist())


def _floats(name: str, datatype: str, arr: np.ndarray, dtype: Any) -> np.ndarray:
    """JSON numbers only (no null, true/false or strings), within the datatype's range."""
    import numpy as np

    if arr.dtype.kind == "O" and all(type(v) in (int, float) for v in arr.reshape(-1)):
        try:  # integers past int64 (numpy keeps them as objects)
            arr = arr.astype(np.float64)
        except OverflowError:
            raise bad_request(
                f"input '{clip(name)}' holds values outside the {datatype} range"
            ) from None
    if arr.size and arr.dtype.kind not in "iuf":
        raise bad_request(
            f"input '{clip(name)}' is {datatype} but its data holds values that are not "
            "numbers (null, true/false or strings)"
        )
    if arr.size:
        with np.errstate(all="ignore"):
            peak = float(np.abs(arr.astype(np.float64, copy=False)).max())
        if peak > float(np.finfo(dtype).max):  # NaN compares False: it passes as NaN
            raise bad_request(f"input '{clip(name)}' holds values outside the {datatype} range")
    return arr.astype(dtype, copy=False)


def _big_ints(name: str, datatype: str, data: Any, dtype: Any) -> np.ndarray:
    """Integers numpy did not keep as integers (UINT64 past int64): check each is an int."""
    import numpy as np

    try:
        probe = np.asarray(data, dtype=object)
        if not all(type(v) is int for v in probe.reshape(-1)):
            raise ValueError
        return np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise bad_request(
            f"input '{clip(name)}' is {datatype} but its data holds non-integer or "
            "out-of-range values"
        ) from None
