"""The one reader entry point: inputs in any format -> batches of feeds for the model.

``open_data`` reads just enough to resolve the mapping (CSV header, Parquet schema, NPZ
keys), so ``--explain`` can show it without reading the data; ``DataPlan.batches()`` then
streams :class:`~modelforge.data.batch.Batch` objects whose feeds already have the model's
dtypes and shapes. Row order is preserved across files.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from modelforge.data.batch import Batch, ColumnBatch
from modelforge.data.cast import CastPolicy, check_policy
from modelforge.data.formats import ARRAYS, STDIO, input_format
from modelforge.data.mapping import Mapping, assemble, resolve_arrays, resolve_tabular
from modelforge.errors import DataError, NotFoundError, UsageError
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np

    from modelforge.model.schema import ModelSchema

READ_ROWS = 65_536  # rows per read block for typed formats (CSV reads ~16 MB blocks)


@dataclass(frozen=True)
class ReadOptions:
    fmt: str | None = None
    maps: dict[str, list[str]] = field(default_factory=dict)
    columns: list[str] | None = None
    keep: list[str] = field(default_factory=list)
    policy: CastPolicy = "safe"
    allow_nan: bool = False
    encoding: str | None = None
    delimiter: str | None = None
    row_groups: tuple[int, ...] | None = None  # Parquet only: read just these row groups

    def __post_init__(self) -> None:
        check_policy(self.policy)


@dataclass
class DataPlan:
    fmt: str
    sources: list[str]
    mapping: Mapping
    total_bytes: int | None
    _columns: Callable[[], Iterator[ColumnBatch]]
    options: ReadOptions

    def batches(self) -> Iterator[Batch]:
        for cb in self._columns():
            if cb.rows == 0:
                continue
            yield assemble(
                self.mapping, cb, policy=self.options.policy, allow_nan=self.options.allow_nan
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.fmt,
            "sources": self.sources,
            "bytes": self.total_bytes,
            "cast": self.options.policy,
            "allow_nan": self.options.allow_nan,
            "mapping": self.mapping.to_dict(),
        }


def _open_input(path: str, stdin: IO[bytes] | None) -> tuple[IO[bytes], int | None]:
    if path == STDIO:
        fh = stdin or sys.stdin.buffer
        try:  # stdin redirected from a regular file (< data.parquet) reads like that file
            st = os.fstat(fh.fileno())
        except (AttributeError, OSError, ValueError):
            return fh, None
        return fh, (st.st_size if stat.S_ISREG(st.st_mode) else None)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFoundError(
            f"input file '{safe(path)}' does not exist",
            hint="check the path",
            code="input_not_found",
        ) from None
    except OSError as exc:
        raise DataError(
            f"cannot read input '{safe(path)}': {safe(exc.strerror)}", code="input_unreadable"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(
            f"input '{safe(path)}' is a directory", hint="pass a data file", code="input_not_file"
        )
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the generator that reads it
    except OSError as exc:
        raise DataError(
            f"cannot open input '{safe(path)}': {safe(exc.strerror)}", code="input_unreadable"
        ) from None
    return fh, (st.st_size if stat.S_ISREG(st.st_mode) else None)


READ_CHUNK = 8 * 1024 * 1024
_MAGIC = {
    "npy": (b"\x93NUMPY",),
    "npz": (b"PK\x03\x04", b"PK\x05\x06"),
    "parquet": (b"PAR1",),
}


def _read_all(fh: IO[bytes], name: str, fmt: str | None = None) -> bytes:
    """Read a whole stream (stdin, a FIFO, a device) up to the array cap; with ``fmt``, the
    first bytes must carry its magic, so ``/dev/zero`` or a text stream fails at once."""
    from modelforge.data.npy import max_array_bytes

    cap = max_array_bytes()
    head = b""
    if fmt in _MAGIC:
        want = max(len(m) for m in _MAGIC[fmt])
        while len(head) < want:
            more = fh.read(want - len(head))
            if not more:
                break
            head += more
        if head and not any(head.startswith(m) for m in _MAGIC[fmt]):
            label = "Parquet" if fmt == "parquet" else fmt.upper()
            raise DataError(
                f"input '{safe(name)}' is not a{'n' if fmt[0] == 'n' else ''} {label} file "
                f"(it does not start with the {label} signature)",
                hint="check the file, or pass the right --format",
                code="invalid_parquet" if fmt == "parquet" else f"invalid_{fmt}",
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


def open_data(
    inputs: list[str],
    schema: ModelSchema,
    options: ReadOptions,
    *,
    stored: Any = None,
    stdin: IO[bytes] | None = None,
) -> DataPlan:
    """Open the inputs, read headers/keys, resolve the mapping; nothing is fed yet.

    Files opened here are closed by ``DataPlan.batches()`` when it ends, or right away
    when planning fails."""
    opened: list[IO[bytes]] = []
    try:
        return _open_data(inputs, schema, options, stored, stdin, opened)
    except BaseException:
        for fh in opened:
            if fh is not stdin and fh is not sys.stdin.buffer:
                fh.close()
        raise


def _open_data(
    inputs: list[str],
    schema: ModelSchema,
    options: ReadOptions,
    stored: Any,
    stdin: IO[bytes] | None,
    handles: list[IO[bytes]],
) -> DataPlan:
    check_policy(options.policy)
    inputs = inputs or [STDIO]
    if inputs.count(STDIO) > 1:
        raise UsageError("stdin ('-') can be given only once", code="invalid_option")
    fmts = {input_format(p, options.fmt) for p in inputs}
    if len(fmts) > 1:
        raise UsageError(
            f"inputs mix formats ({', '.join(sorted(fmts))})",
            hint="pass inputs of one format per run",
            code="mixed_formats",
        )
    fmt = fmts.pop()
    if options.row_groups is not None and fmt != "parquet":
        raise UsageError("row groups can be selected in Parquet inputs only", code="invalid_option")
    opened = []
    for p in inputs:
        opened.append(_open_input(p, stdin))
        handles.append(opened[-1][0])
    sizes = [size for _, size in opened]
    total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
    names = ["<stdin>" if p == STDIO else p for p in inputs]
    if fmt in ARRAYS:
        if options.keep:
            raise UsageError(
                "--keep works with tabular inputs (CSV, TSV, Parquet, JSON Lines)",
                code="invalid_option",
            )
        arrays = [
            _load_arrays(fh, p, n, fmt, size is not None)
            for (fh, size), p, n in zip(opened, inputs, names, strict=False)
        ]
        return array_plan(arrays, schema, options, fmt=fmt, sources=names, total=total)
    readers = [
        _tabular_reader(fh, n, fmt, options, size is not None)
        for (fh, size), n in zip(opened, names, strict=False)
    ]
    columns = readers[0].columns
    for r, n in zip(readers[1:], names[1:], strict=False):
        if r.columns != columns:
            raise DataError(
                f"input '{safe(n)}' has different columns from '{safe(names[0])}'",
                hint="all inputs of one run need the same header",
                code="column_mismatch",
            )
    mapping = resolve_tabular(
        schema,
        columns,
        maps=options.maps,
        columns_opt=options.columns,
        stored=stored,
        keep=options.keep,
        source=names[0],
    )
    for w in mapping.warnings:
        from modelforge.log import warn

        warn(w)

    def columns_iter() -> Iterator[ColumnBatch]:
        start = 0
        wanted = list(dict.fromkeys([*mapping.targets(), *options.keep]))
        for reader, (fh, _) in zip(readers, opened, strict=False):
            try:
                if fmt in ("csv", "tsv"):
                    it = reader.batches(
                        mapping.targets(),
                        options.keep,
                        policy=options.policy,
                        allow_nan=options.allow_nan,
                        start=start,
                    )
                elif fmt == "parquet":
                    it = reader.batches(
                        wanted, READ_ROWS, start=start, row_groups=options.row_groups
                    )
                else:
                    it = reader.batches(wanted, start=start)
                for cb in it:
                    if not cb.coerced:
                        cb.keep = {c: cb.columns.pop(c) for c in options.keep}
                    start += cb.rows
                    yield cb
            finally:
                if fh is not stdin and fh is not sys.stdin.buffer:
                    fh.close()

    return DataPlan(fmt, names, mapping, total, columns_iter, options)


def _tabular_reader(
    fh: IO[bytes], name: str, fmt: str, options: ReadOptions, regular: bool = True
) -> Any:
    if fmt in ("csv", "tsv"):
        from modelforge.data.csv_reader import CsvReader

        return CsvReader(fh, name, fmt=fmt, delimiter=options.delimiter, encoding=options.encoding)
    if fmt == "parquet":
        from modelforge.data.tabular import ParquetReader

        src: Any = fh if regular and fh.seekable() else io.BytesIO(_read_all(fh, name, fmt))
        return ParquetReader(src, name)
    from modelforge.data.tabular import JsonlReader

    return JsonlReader(fh, name)


def _load_arrays(
    fh: IO[bytes], path: str, name: str, fmt: str, regular: bool = True
) -> dict[str, np.ndarray]:
    """A regular file is memory-mapped (NPY) or opened as a zip (NPZ); stdin, FIFOs and
    devices are read (signature first, then up to the array cap) and parsed in memory."""
    from modelforge.data import npy

    stream = path == STDIO or not regular  # np.memmap / zipfile need the path
    try:
        if fmt == "npy":
            if not stream:
                fh.close()
                return {"<npy>": npy.load_npy_file(path)}
            return {"<npy>": npy.load_npy_bytes(_read_all(fh, name, fmt), name)}
        if not stream:
            fh.close()
            return npy.load_npz(path, name)
        return npy.load_npz(io.BytesIO(_read_all(fh, name, fmt)), name)
    finally:
        if path != STDIO:
            fh.close()


def array_plan(
    arrays: list[dict[str, np.ndarray]],
    schema: ModelSchema,
    options: ReadOptions,
    *,
    fmt: str,
    sources: list[str],
    total: int | None = None,
) -> DataPlan:
    """Plan for named arrays (NPZ, --data JSON, Python dicts) or one array (NPY)."""
    single = fmt == "npy"
    keys = list(arrays[0])
    for a, n in zip(arrays[1:], sources[1:], strict=False):
        if list(a) != keys:
            raise DataError(
                f"input '{safe(n)}' has different arrays from '{safe(sources[0])}'",
                hint="all inputs of one run need the same keys",
                code="column_mismatch",
            )
    mapping = resolve_arrays(schema, keys, single=single, maps=options.maps, source=sources[0])
    for w in mapping.warnings:
        from modelforge.log import warn

        warn(w)
    used = [b.columns[0] for b in mapping.bindings]
    for a, n in zip(arrays, sources, strict=False):
        lengths = set()
        for k in used:
            if a[k].ndim == 0:
                raise DataError(
                    f"array '{safe(k)}' in '{safe(n)}' is 0-d (a single scalar); "
                    "inputs need a batch dimension",
                    hint="save it with shape [1, ...]",
                    code="shape_mismatch",
                )
            lengths.add(a[k].shape[0])
        if len(lengths) > 1:
            raise DataError(
                f"arrays in '{safe(n)}' have different row counts "
                f"({', '.join(str(x) for x in sorted(lengths))})",
                hint="every input array needs the same first dimension",
                code="shape_mismatch",
            )

    def columns_iter() -> Iterator[ColumnBatch]:
        start = 0
        for a, n in zip(arrays, sources, strict=False):
            rows = a[used[0]].shape[0] if used else 0
            for lo in range(0, rows, READ_ROWS):
                hi = min(rows, lo + READ_ROWS)
                cols = {k: _native(a[k][lo:hi]) for k in used}
                yield ColumnBatch(n, start + lo, hi - lo, cols, file_row=lo, bytes_read=0)
            start += rows

    return DataPlan(fmt, sources, mapping, total, columns_iter, options)


def _native(arr: np.ndarray) -> np.ndarray:
    import numpy as np

    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def iter_batches(
    inputs: list[str],
    schema: ModelSchema,
    options: ReadOptions,
    *,
    stored: Any = None,
    stdin: IO[bytes] | None = None,
) -> Iterator[Batch]:
    """The one reader entry point: feeds already coerced to ``schema``, kept columns and
    row offsets, batch by batch (``open_data`` when the mapping is needed first)."""
    yield from open_data(inputs, schema, options, stored=stored, stdin=stdin).batches()
