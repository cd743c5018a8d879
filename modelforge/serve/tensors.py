"""Tensor data of OIP requests: numpy arrays from binary tensor bytes and from JSON values.

Every value is checked against the datatype (range, kind, count against the shape) and
every message names the input. :mod:`.codec` decodes the request around them.
"""

from __future__ import annotations

import itertools
import math
import struct
from typing import TYPE_CHECKING, Any

from modelforge.serve.protocol import BINARY_ONLY, OIP_NUMPY, OIP_SIZE, bad_request, clip

if TYPE_CHECKING:
    import numpy as np


def from_bytes(name: str, datatype: str, data: Any, shape: list[int]) -> np.ndarray:
    import numpy as np

    count = math.prod(shape)
    if datatype == "BYTES":
        return decode_bytes(name, bytes(data), shape, count)
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


def decode_bytes(name: str, data: bytes, shape: list[int], count: int) -> np.ndarray:
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


def from_json(name: str, datatype: str, data: Any, shape: list[int]) -> np.ndarray:
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
        # numpy reads true/false among numbers as 1/0: holds_bool looks at those values
        if dtype.kind in "fiu" and arr.dtype.kind in "iuf" and holds_bool(data, arr):
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


def holds_bool(data: Any, arr: np.ndarray) -> bool:
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
