"""NPY and NPZ input, validated before anything is allocated.

The NPY header is parsed here (never by ``np.load``): the dict must be a plain literal,
the dtype a simple one (object/structured dtypes are refused, so pickles are never even
considered), and the declared shape x itemsize must equal the bytes present. NPZ members
are checked by name (no path traversal) and declared size (zip bombs) before inflating;
``zipfile`` then never reads more than the declared size.
"""

from __future__ import annotations

import ast
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from modelforge.errors import DataError
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np

MAGIC = b"\x93NUMPY"
MAX_HEADER_LEN = 64 * 1024
_HINT = "re-save the array with numpy.save / numpy.savez"


def max_array_bytes() -> int:
    """Cap on one array held in memory (NPZ members, stdin): half the RAM, at most 16 GiB."""
    env = os.environ.get("MODELFORGE_MAX_ARRAY_BYTES")
    if env and env.isdigit():
        return int(env)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return int(min(ram // 2, 16 << 30))


@dataclass(frozen=True)
class NpyHeader:
    dtype: Any
    shape: tuple[int, ...]
    fortran: bool
    offset: int  # where the data starts
    nbytes: int


def parse_header(head: bytes, name: str) -> NpyHeader:
    """Parse and validate the header at the start of ``head``."""
    import numpy as np

    def bad(problem: str, code: str = "invalid_npy") -> DataError:
        return DataError(f"'{safe(name)}' {problem}", hint=_HINT, code=code)

    if not head.startswith(MAGIC):
        raise bad("is not an NPY file (no \\x93NUMPY magic)")
    if len(head) < 10:
        raise bad("is truncated inside its header", "truncated_npy")
    major = head[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", head[8:10])
        start = 10
    elif major in (2, 3):
        if len(head) < 12:
            raise bad("is truncated inside its header", "truncated_npy")
        (hlen,) = struct.unpack("<I", head[8:12])
        start = 12
    else:
        raise bad(f"has unsupported NPY format version {major}")
    if hlen > MAX_HEADER_LEN:
        raise bad(f"declares a {hlen:,}-byte header (limit {MAX_HEADER_LEN:,})")
    if len(head) < start + hlen:
        raise bad("is truncated inside its header", "truncated_npy")
    raw = head[start : start + hlen]
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
        meta = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        raise bad("has an unreadable header") from None
    if not isinstance(meta, dict) or set(meta) != {"descr", "fortran_order", "shape"}:
        raise bad("has a header without exactly descr, fortran_order and shape")
    descr, fortran, shape = meta["descr"], meta["fortran_order"], meta["shape"]
    if not isinstance(descr, str):
        raise bad("holds a structured array; only plain numeric, bool or string arrays are read")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        raise bad(f"has an unknown dtype {safe(descr, 40)}") from None
    if dtype.hasobject or dtype.kind in "OV":
        raise DataError(
            f"'{safe(name)}' holds Python objects (dtype {safe(descr, 40)}): such arrays are "
            "pickles and are never loaded",
            hint="save plain numeric or string arrays (numpy.save with a non-object dtype)",
            code="pickle_refused",
        )
    if (
        not isinstance(shape, tuple)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or not isinstance(fortran, bool)
    ):
        raise bad("has an invalid shape or fortran_order")
    count = 1
    for d in shape:
        count *= d
    return NpyHeader(dtype, tuple(shape), fortran, start + hlen, count * dtype.itemsize)


def _check_size(h: NpyHeader, available: int, name: str) -> None:
    if h.nbytes > available:
        raise DataError(
            f"'{safe(name)}' declares shape {list(h.shape)} of {h.dtype} ({h.nbytes:,} bytes) "
            f"but holds only {available:,} bytes of data; it is truncated or corrupt",
            hint=_HINT,
            code="truncated_npy",
        )
    if h.nbytes < available:
        raise DataError(
            f"'{safe(name)}' has {available - h.nbytes:,} bytes after the array it declares",
            hint=_HINT,
            code="invalid_npy",
        )


def _from_bytes(data: bytes, h: NpyHeader) -> np.ndarray:
    import numpy as np

    count = h.nbytes // h.dtype.itemsize if h.dtype.itemsize else 0
    flat = np.frombuffer(data, dtype=h.dtype, count=count, offset=h.offset)
    return flat.reshape(h.shape, order="F" if h.fortran else "C")


def load_npy_file(path: str) -> np.ndarray:
    """Memory-map a validated .npy file (nothing is read into memory up front)."""
    import numpy as np

    with open(path, "rb") as fh:
        head = fh.read(12 + MAX_HEADER_LEN)
        size = os.fstat(fh.fileno()).st_size
    h = parse_header(head, path)
    _check_size(h, size - h.offset, path)
    if h.nbytes == 0:
        return np.empty(h.shape, dtype=h.dtype)
    return np.memmap(
        path, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape,
        order="F" if h.fortran else "C",
    )  # fmt: skip


def load_npy_bytes(data: bytes, name: str) -> np.ndarray:
    h = parse_header(data[: 12 + MAX_HEADER_LEN], name)
    _check_size(h, len(data) - h.offset, name)
    return _from_bytes(data, h)


_DRIVE = re.compile(r"[A-Za-z]:")


def _member_key(info: zipfile.ZipInfo, archive: str) -> str:
    name = info.filename
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or ".." in parts
        or _DRIVE.match(name)  # "C:x.npy"; a colon elsewhere is a TF name ("input_1:0")
        or info.is_dir()
    ):
        raise DataError(
            f"'{safe(archive)}' has a member with an unsafe name '{safe(name)}'",
            hint="NPZ members must be plain names such as x.npy",
            code="unsafe_npz_member",
        )
    return name[:-4] if name.endswith(".npy") else name


def load_npz(source: str | IO[bytes], name: str) -> dict[str, np.ndarray]:
    """Read every member after checking names and declared sizes; keys without '.npy'."""
    cap = max_array_bytes()
    try:
        zf = zipfile.ZipFile(source)
    except Exception as exc:  # zipfile raises many types on hostile archives
        raise DataError(
            f"'{safe(name)}' is not a valid NPZ (zip) archive: {safe(str(exc), 100)}",
            hint=_HINT, code="invalid_npz",
        ) from None  # fmt: skip
    out: dict[str, np.ndarray] = {}
    with zf:
        infos = zf.infolist()
        total = 0
        for info in infos:
            key = _member_key(info, name)
            if key in out:
                raise DataError(
                    f"'{safe(name)}' has two members named '{safe(key)}'",
                    hint=_HINT,
                    code="invalid_npz",
                )
            total += info.file_size
            if info.file_size > cap or total > cap:
                raise DataError(
                    f"'{safe(name)}' member '{safe(info.filename)}' declares "
                    f"{info.file_size:,} bytes uncompressed ({info.compress_size:,} compressed); "
                    f"the limit is {cap:,}",
                    hint="set MODELFORGE_MAX_ARRAY_BYTES to allow larger arrays",
                    code="npz_too_large",
                )
            out[key] = None  # type: ignore[assignment]
        for info in infos:
            key = _member_key(info, name)
            where = f"{name}:{info.filename}"
            try:
                with zf.open(info) as fh:
                    head = fh.read(min(info.file_size, 12 + MAX_HEADER_LEN))
                    h = parse_header(head, where)
                    _check_size(h, info.file_size - h.offset, where)
                    data = head + fh.read(info.file_size - len(head))
            except DataError:
                raise
            except Exception as exc:  # zipfile/zlib raise many types on hostile archives
                raise DataError(
                    f"'{safe(where)}' cannot be read: {safe(str(exc), 100)}",
                    hint=_HINT, code="invalid_npz",
                ) from None  # fmt: skip
            out[key] = _from_bytes(data, h)
    return out
