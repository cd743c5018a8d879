"""Opening user inputs: paths and stdin -> sources (:mod:`modelforge.data.sources`).

The format comes from ``--format``, else the extension; stdin without ``--format`` is
sniffed by its magic bytes (NPY, NPZ, Parquet), else read as CSV. ``SOURCES`` maps each
format of :data:`modelforge.data.formats.REGISTRY` to the function that opens it. Streams
that cannot be memory-mapped or seeked (stdin, FIFOs, devices) are read whole up to the
array cap, signature first.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from modelforge.data.formats import REGISTRY, STDIO, input_format, sniff
from modelforge.data.sources import (
    ArraySource,
    CsvSource,
    JsonlSource,
    ParquetSource,
    Source,
    _stat_input,
)
from modelforge.errors import DataError, UsageError
from modelforge.text import safe

if TYPE_CHECKING:
    from modelforge.data.options import PredictOptions

READ_CHUNK = 8 * 1024 * 1024


def _open_path(path: str) -> tuple[IO[bytes], int | None]:
    st = _stat_input(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed with the source
    except OSError as exc:
        raise DataError(
            f"cannot open input '{safe(path)}': {safe(exc.strerror)}", code="input_unreadable"
        ) from None
    return fh, (st.st_size if stat.S_ISREG(st.st_mode) else None)


def _stdin(stdin: IO[bytes] | None) -> tuple[IO[bytes], int | None]:
    fh = stdin or getattr(sys.stdin, "buffer", None)  # sys.stdin is None when started <&-
    if fh is None:
        raise DataError(
            "cannot read the input from stdin: stdin is closed",
            hint="pass an input file, or pipe the data into stdin",
            code="stdin_closed",
        )
    try:  # stdin redirected from a regular file (< data.parquet) reads like that file
        st = os.fstat(fh.fileno())
    except (AttributeError, OSError, ValueError):
        return fh, None
    return fh, (st.st_size if stat.S_ISREG(st.st_mode) else None)


class _Prefixed(io.RawIOBase):
    """``head`` (bytes already read to sniff the format), then the rest of ``fh``."""

    def __init__(self, head: bytes, fh: IO[bytes]) -> None:
        self.head, self.fh = head, fh

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fh.fileno()

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        read1 = getattr(self.fh, "read1", self.fh.read)
        data = read1(len(b))
        b[: len(data)] = data
        return len(data)


def _sniff_stdin(fh: IO[bytes]) -> tuple[str, IO[bytes]]:
    head = b""
    while len(head) < 8:
        more = fh.read(8 - len(head))
        if not more:
            break
        head += more
    fmt = sniff(head) or "csv"
    return fmt, io.BufferedReader(_Prefixed(head, fh), 1 << 20)  # type: ignore[arg-type]


def read_all(fh: IO[bytes], name: str, fmt: str | None = None) -> bytes:
    """Read a whole stream (stdin, a FIFO, a device) up to the array cap; with ``fmt``, the
    first bytes must carry its magic, so ``/dev/zero`` or a text stream fails at once."""
    from modelforge.data.npy import max_array_bytes

    cap = max_array_bytes()
    head = b""
    magic = REGISTRY[fmt].magic if fmt else ()
    if magic:
        want = max(len(m) for m in magic)
        while len(head) < want:
            more = fh.read(want - len(head))
            if not more:
                break
            head += more
        if head and not any(head.startswith(m) for m in magic):
            label = REGISTRY[fmt].title  # type: ignore[index]
            raise DataError(
                f"input '{safe(name)}' is not a{'n' if label[0] in 'NAEIOU' else ''} {label} "
                f"file (it does not start with the {label} signature)",
                hint="check the file, or pass the right --format",
                code=f"invalid_{fmt}",
            )
    # in chunks: one read(cap) would reserve the whole cap up front (under the forked
    # child's RLIMIT_AS that alone fails)
    parts = [head]
    size = len(head)
    while size <= cap:
        chunk = fh.read(min(READ_CHUNK, cap + 1 - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    data = b"".join(parts)
    if len(data) > cap:
        raise DataError(
            f"input '{safe(name)}' is larger than {cap:,} bytes",
            hint="pass a file path instead of stdin, or raise MODELFORGE_MAX_ARRAY_BYTES",
            code="input_too_large",
        )
    return data


@dataclass
class _Opened:
    """An input being opened: its stream, size (None: not a regular file) and name."""

    path: str
    fh: IO[bytes]
    size: int | None
    name: str
    stdin: bool

    @property
    def own(self) -> bool:  # stdin is never closed by us
        return not self.stdin

    @property
    def stream(self) -> bool:  # np.memmap / zipfile / pyarrow need a regular file's path
        return self.stdin or self.size is None

    def read_all(self, fmt: str | None) -> bytes:
        data = read_all(self.fh, self.name, fmt)
        if not data:
            raise _empty(self.name, fmt or "json")
        return data

    def release(self) -> None:
        """Done with the stream (the source reopens the path itself, or read it all)."""
        if self.own:
            self.fh.close()


def _open_csv(o: _Opened, fmt: str, options: PredictOptions) -> Source:
    return CsvSource(
        o.fh, o.name, fmt=fmt, delimiter=options.delimiter, encoding=options.encoding,
        size=o.size, own=o.own, regular=not o.stream,
    )  # fmt: skip


def _open_jsonl(o: _Opened, fmt: str, options: PredictOptions) -> Source:
    return JsonlSource(o.fh, o.name, o.size, o.own)


def _open_parquet(o: _Opened, fmt: str, options: PredictOptions) -> Source:
    if o.stream or not o.fh.seekable():
        data = io.BytesIO(o.read_all(fmt))
        o.release()
        return ParquetSource(data, o.name, size=o.size)
    o.release()
    return ParquetSource(o.path, o.name, size=o.size)


def _open_json(o: _Opened, fmt: str, options: PredictOptions) -> Source:
    from modelforge.data.inline import arrays_from_json

    text = o.read_all(None).decode("utf-8", "replace")
    o.release()
    return ArraySource(arrays_from_json(text, o.name), o.name, fmt="json", size=o.size)


def _open_npy(o: _Opened, fmt: str, options: PredictOptions) -> Source:
    from modelforge.data import npy

    if o.stream:
        arr = npy.load_npy_bytes(o.read_all(fmt), o.name)
        o.release()
    else:
        o.release()
        arr = npy.load_npy_file(o.path)
    return ArraySource({"<npy>": arr}, o.name, fmt="npy", single=True, size=o.size)


def _open_npz(o: _Opened, fmt: str, options: PredictOptions) -> Source:
    from modelforge.data import npy

    source: Any = io.BytesIO(o.read_all(fmt)) if o.stream else o.path
    o.release()
    return ArraySource(npy.load_npz(source, o.name), o.name, fmt="npz", size=o.size)


# format name (see modelforge.data.formats.REGISTRY) -> how an opened input becomes a source
SOURCES: dict[str, Callable[[_Opened, str, PredictOptions], Source]] = {
    "csv": _open_csv,
    "tsv": _open_csv,
    "jsonl": _open_jsonl,
    "parquet": _open_parquet,
    "json": _open_json,
    "npy": _open_npy,
    "npz": _open_npz,
}


_WHOLE_FORMATS = ("npy", "npz", "parquet", "json")
_ARTICLE = {"npy": "an NPY", "npz": "an NPZ", "parquet": "a Parquet"}


def _empty(name: str, fmt: str) -> DataError:
    return DataError(
        f"input '{safe(name)}' is empty (0 bytes)",
        hint=f"pass {_ARTICLE.get(fmt, 'a ' + fmt.upper())} file with data",
        code="empty_input",
    )


def _open_one(path: str, fmt: str, options: PredictOptions, stdin: IO[bytes] | None) -> Source:
    is_stdin = path == STDIO
    fh, size = _stdin(stdin) if is_stdin else _open_path(path)
    if is_stdin and options.fmt is None:
        fmt, fh = _sniff_stdin(fh)
    opened = _Opened(path, fh, size, "<stdin>" if is_stdin else path, is_stdin)
    if size == 0 and fmt in _WHOLE_FORMATS:  # the text readers say it (blank lines too)
        opened.release()
        raise _empty(opened.name, fmt)
    try:
        return SOURCES[fmt](opened, fmt, options)
    except BaseException:
        opened.release()
        raise


def open_sources(
    inputs: list[str], options: PredictOptions, stdin: IO[bytes] | None = None
) -> list[Source]:
    """Open every input (``[]`` or ``-`` is stdin); all must be of one format."""
    inputs = list(inputs) or [STDIO]
    if inputs.count(STDIO) > 1:
        raise UsageError("stdin ('-') can be given only once", code="invalid_option")
    fmts = {input_format(p, options.fmt) for p in inputs if p != STDIO}
    if len(fmts) > 1:
        raise UsageError(
            f"inputs mix formats ({', '.join(sorted(fmts))})",
            hint="pass inputs of one format per run",
            code="mixed_formats",
        )
    default = fmts.pop() if fmts else input_format(STDIO, options.fmt)
    opened: list[Source] = []
    try:
        for p in inputs:
            opened.append(_open_one(p, default, options, stdin))
    except BaseException:
        for s in opened:
            s.close()
        raise
    if len({s.fmt for s in opened}) > 1:
        for s in opened:
            s.close()
        raise UsageError(
            f"inputs mix formats ({', '.join(sorted({s.fmt for s in opened}))})",
            hint="pass inputs of one format per run",
            code="mixed_formats",
        )
    return opened
