"""Sources: the one reader protocol, one class per format, and opening user inputs.

A source offers ``columns`` (column or array names), ``total_bytes`` / ``total_rows`` when
known, and ``batches(wanted, dtypes)``: :class:`~modelforge.data.batch.ColumnBatch` objects
holding the wanted columns as read (not yet cast). ``dtypes`` names the dtype each column
will feed, so a reader may parse text straight to it (CSV); casting itself happens in one
place, :func:`modelforge.data.cast.cast_column`. Array sources (NPY, NPZ, JSON, dicts)
also hold their whole ``arrays``, for models run once on whole tensors.

:func:`modelforge.data.inputs.open_sources` turns paths / ``-`` into sources (format
from ``--format``, the extension, or stdin's magic bytes); a front that has its data in another
form builds sources directly: ``ArraySource({"x": arr})`` (a server's decoded request),
``ParquetSource(path, row_groups=[3, 4])`` (one slice of one file, for a cluster task).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, Protocol

from modelforge.data.batch import ColumnBatch
from modelforge.errors import ArgumentError, DataError, NotFoundError
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np


READ_ROWS = 65_536  # rows per batch for typed formats (CSV reads ~16 MB blocks)


class Source(Protocol):
    """The reader protocol every format implements."""

    @property
    def name(self) -> str: ...  # how messages name it (a path, "<stdin>", "--data")

    @property
    def fmt(self) -> str: ...

    @property
    def kind(self) -> str: ...  # "table" | "arrays"

    @property
    def columns(self) -> list[str]: ...

    @property
    def total_bytes(self) -> int | None: ...

    @property
    def total_rows(self) -> int | None: ...

    def batches(self, wanted: list[str], dtypes: dict[str, str]) -> Iterator[ColumnBatch]: ...

    def close(self) -> None: ...


class _Stream:
    """A source over an opened stream, closed with the source (never stdin itself)."""

    def __init__(self, fh: IO[bytes] | None, own: bool) -> None:
        self._fh = fh
        self._own = own

    def close(self) -> None:
        if self._fh is not None and self._own:
            self._fh.close()
        self._fh = None


class CsvSource(_Stream):
    kind = "table"
    total_rows = None

    def __init__(
        self,
        fh: IO[bytes],
        name: str,
        *,
        fmt: str = "csv",
        delimiter: str | None = None,
        encoding: str | None = None,
        size: int | None = None,
        own: bool = True,
        regular: bool = False,
    ) -> None:
        from modelforge.data.csv_reader import CsvReader

        super().__init__(fh, own)
        self.name, self.fmt, self.total_bytes = name, fmt, size
        self.reader = CsvReader(
            fh, name, fmt=fmt, delimiter=delimiter, encoding=encoding, regular=regular
        )
        self.columns = self.reader.columns

    def batches(self, wanted: list[str], dtypes: dict[str, str]) -> Iterator[ColumnBatch]:
        return self.reader.batches(wanted, dtypes)


class JsonlSource(_Stream):
    kind = "table"
    fmt = "jsonl"
    total_rows = None

    def __init__(self, fh: IO[bytes], name: str, size: int | None = None, own: bool = True):
        from modelforge.data.jsonl import JsonlReader

        super().__init__(fh, own)
        self.name, self.total_bytes = name, size
        self.reader = JsonlReader(fh, name)
        self.columns = self.reader.columns

    def batches(self, wanted: list[str], dtypes: dict[str, str]) -> Iterator[ColumnBatch]:
        return self.reader.batches(wanted, dtypes)


class ParquetSource(_Stream):
    """A Parquet file (path or seekable stream), optionally only some of its row groups."""

    kind = "table"
    fmt = "parquet"

    def __init__(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        name: str | None = None,
        *,
        row_groups: list[int] | None = None,
        size: int | None = None,
        own: bool = False,
        metadata: Any = None,
    ) -> None:
        """``metadata``: the file's footer (``pyarrow.parquet.FileMetaData``) when the
        caller already parsed it (a cluster worker running several parts of one file)."""
        from modelforge.data.tabular import ParquetReader

        path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        super().__init__(None if path is not None else source, own)  # type: ignore[arg-type]
        self.name = name or path or "<parquet>"
        if path is not None and size is None:
            size = _stat_input(path).st_size
        self.total_bytes = size if row_groups is None else None
        target: Any = path if path is not None else source
        self.reader = ParquetReader(target, self.name, row_groups, metadata)
        self.columns = self.reader.columns
        self.total_rows = self.reader.total_rows
        self.row_groups = self.reader.row_groups

    def batches(self, wanted: list[str], dtypes: dict[str, str]) -> Iterator[ColumnBatch]:
        return self.reader.batches(wanted, dtypes, READ_ROWS)


class ArraySource:
    """Named arrays (NPZ, JSON, a dict) or one array (NPY: ``single``), held whole."""

    kind = "arrays"

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        name: str = "<arrays>",
        *,
        fmt: str = "npz",
        single: bool = False,
        size: int | None = None,
    ) -> None:
        self.arrays, self.name, self.fmt, self.single = arrays, name, fmt, single
        self.columns = list(arrays)
        self.total_bytes = size

    @property
    def total_rows(self) -> int | None:
        first = next(iter(self.arrays.values()), None)
        return None if first is None or first.ndim == 0 else int(first.shape[0])

    def batches(self, wanted: list[str], dtypes: dict[str, str]) -> Iterator[ColumnBatch]:
        rows = self.arrays[wanted[0]].shape[0] if wanted else 0
        for lo in range(0, rows, READ_ROWS):
            hi = min(rows, lo + READ_ROWS)
            cols = {k: _native(self.arrays[k][lo:hi]) for k in wanted}
            yield ColumnBatch(self.name, lo, hi - lo, cols, file_row=lo)

    def close(self) -> None:
        pass


class FrameSource:
    """A pandas or polars DataFrame given in Python."""

    kind = "table"
    fmt = "frame"
    total_bytes = None

    def __init__(self, df: Any, name: str = "<DataFrame>") -> None:
        import polars as pl

        self.df = df if isinstance(df, pl.DataFrame) else pl.from_pandas(df)
        self.name = name
        self.columns = [str(c) for c in self.df.columns]
        self.total_rows = self.df.height

    def batches(self, wanted: list[str], dtypes: dict[str, str]) -> Iterator[ColumnBatch]:
        from modelforge.data.tabular import row_place, series_to_numpy

        for lo in range(0, self.df.height, READ_ROWS):
            part = self.df.slice(lo, READ_ROWS)
            place = row_place(self.name, lo)
            cols = {
                c: series_to_numpy(part.get_column(c), place) if c in dtypes else part.get_column(c)
                for c in wanted
            }
            yield ColumnBatch(self.name, lo, part.height, cols, file_row=lo)

    def close(self) -> None:
        pass


def _native(arr: np.ndarray) -> np.ndarray:
    import numpy as np

    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def python_source(data: Any) -> Source:
    """A source for data given in Python: DataFrame, numpy array or dict of arrays."""
    import numpy as np

    if isinstance(data, dict):
        arrays = {str(k): np.asarray(v) for k, v in data.items()}
        return ArraySource(arrays, "<dict>", fmt="npz")
    if isinstance(data, np.ndarray):
        return ArraySource({"<array>": data}, "<array>", fmt="npy", single=True)
    module = type(data).__module__.split(".")[0]
    if module not in ("pandas", "polars") or not hasattr(data, "columns"):
        what = "an iterator (it can be read only once)" if hasattr(data, "__next__") else None
        raise ArgumentError(
            f"data must be a path, a list of paths, a pandas or polars DataFrame, a numpy "
            f"array or a dict of arrays, got {what or type(data).__name__}",
            hint="pass data=list(...) for several paths, or build a DataFrame first",
        )
    return FrameSource(data)


def _stat_input(path: str) -> os.stat_result:
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
    return st
