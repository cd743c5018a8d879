"""Parquet and JSON Lines readers: typed columns, streamed; cast later in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from modelforge.data.batch import ColumnBatch
from modelforge.errors import DataError
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np
    import polars as pl


def series_to_numpy(s: pl.Series, place: Callable[[int], str] | None = None) -> np.ndarray:
    """A polars column as numpy; list columns become 2-D (or deeper) arrays.

    ``place(row)`` names row ``row`` of ``s`` for messages ("input 'd.jsonl' line 5");
    without it rows are counted from 1."""
    import numpy as np
    import polars as pl

    if isinstance(s.dtype, pl.Struct):  # polars would give its fields in key order
        keys = ", ".join(safe(f.name) for f in s.dtype.fields[:8])
        raise DataError(
            f"{place(0) if place else 'row 1'}, column '{safe(s.name)}' holds objects "
            f"({{...}} with keys {keys}); ModelForge does not guess an order for their values",
            hint="write each value as its own column (key), or the values as a list",
            code="nested_column",
        )
    if isinstance(s.dtype, (pl.List, pl.Array)):
        values = s.to_list()
        try:
            arr = np.array(values)
        except ValueError:
            arr = np.array(values, dtype=object)
        if arr.dtype == object:
            raise _ragged(s.name, values, place or (lambda row: f"row {row + 1}"))
        return arr
    if s.dtype == pl.String:
        return s.to_numpy().astype(object)  # nulls stay None: missing values
    if s.dtype == pl.Boolean and s.null_count():
        return np.array(s.to_list(), dtype=object)
    return s.to_numpy()  # numeric nulls become NaN: missing values


def _ragged(column: str, values: list[Any], place: Callable[[int], str]) -> DataError:
    """The error for a list column numpy cannot stack: names the first row that is empty
    or whose shape differs from the first row's."""
    import numpy as np

    hint = "every row needs a list of the same length (pad or drop the odd rows)"
    first: tuple[int, tuple[int, ...]] | None = None
    for row, value in enumerate(values):
        problem = "null instead of a list" if value is None else None
        shape: tuple[int, ...] = ()
        if value is not None:
            try:
                item = np.array(value)
            except ValueError:  # ragged inside the row itself
                item = np.array(value, dtype=object)
            if item.dtype == object:
                problem = "nested lists of different lengths"
                if _has_null(value):
                    problem = "a list with a null value"
            shape = item.shape
        if problem is not None:
            null = "null" in problem
            return DataError(
                f"{place(row)}, column '{safe(column)}' holds {problem}",
                hint="fill in the missing values (or drop the line)" if null else hint,
                code="ragged_list",
            )
        if first is None:
            first = (row, shape)
        elif shape != first[1]:
            return DataError(
                f"{place(row)}, column '{safe(column)}' holds {_shape_text(shape)} but "
                f"{place(first[0])} holds {_shape_text(first[1])}",
                hint=hint,
                code="ragged_list",
            )
    return DataError(  # numpy refused the stack for a reason no single row shows
        f"column '{safe(column)}' holds lists that cannot be stacked into one array",
        hint=hint,
        code="ragged_list",
    )


def row_place(source: str, row0: int) -> Callable[[int], str]:
    """Row ``row`` of a batch that starts at file row ``row0`` -> "'d.parquet' row 12"."""
    name = safe(source)
    return lambda row: f"'{name}' row {row0 + row + 1}"


def _line_place(source: str, line_of: Callable[[int], int]) -> Callable[[int], str]:
    name = safe(source)
    return lambda row: f"input '{name}' line {line_of(row)}"


def _has_null(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return value is None


def _shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return f"a list of {shape[0]} value{'s' if shape[0] != 1 else ''}"
    return f"nested lists of shape {list(shape)}"


class ParquetReader:
    """A Parquet file (or stream): its columns, its row count, and batches of the wanted
    columns. ``row_groups`` restricts it to those row groups (in that order), so a cluster
    task can predict one slice of one file. Columns that pandas recorded as its index
    (``__index_level_0__`` and named indexes in the ``pandas`` metadata) are not data."""

    def __init__(
        self,
        source: str | IO[bytes],
        name: str,
        row_groups: list[int] | None = None,
        metadata: Any = None,
    ) -> None:
        import pyarrow.parquet as pq

        self.name = name
        try:
            self.file = pq.ParquetFile(source, metadata=metadata)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for bad files
            raise DataError(
                f"'{safe(name)}' is not a readable Parquet file: {safe(str(exc), 120)}",
                hint="check the file, or pass --format",
                code="invalid_parquet",
            ) from None
        meta = self.file.metadata
        groups = meta.num_row_groups
        if row_groups is not None:
            bad = [g for g in row_groups if not 0 <= g < groups]
            if bad:
                raise DataError(
                    f"'{safe(name)}' has {groups} row group(s); row group {bad[0]} does not exist",
                    hint=f"pass row groups between 0 and {groups - 1}",
                    code="invalid_row_group",
                )
        self.row_groups = list(range(groups)) if row_groups is None else list(row_groups)
        index = _pandas_index_columns(self.file.schema_arrow)
        self.columns = [c for c in self.file.schema_arrow.names if c not in index]
        dup = next((c for i, c in enumerate(self.columns) if c in self.columns[:i]), None)
        if dup is not None:  # as a CSV header: which one would feed or be kept is a guess
            raise DataError(
                f"'{safe(name)}' has {self.columns.count(dup)} columns named '{safe(dup)}'",
                hint="rename the duplicates when writing the file (column names must be unique)",
                code="duplicate_column",
            )
        self.total_rows = sum(meta.row_group(g).num_rows for g in self.row_groups)

    def batches(
        self, wanted: list[str], dtypes: dict[str, str], batch_rows: int = 65_536
    ) -> Iterator[ColumnBatch]:
        """Stream ``wanted`` columns of the selected row groups; row numbers in messages
        are the file's (a run of consecutive groups is read in one pass)."""
        meta = self.file.metadata
        starts = [0]
        for g in range(meta.num_row_groups):
            starts.append(starts[-1] + meta.row_group(g).num_rows)
        runs: list[list[int]] = []
        for g in self.row_groups:
            if runs and runs[-1][-1] + 1 == g:
                runs[-1].append(g)
            else:
                runs.append([g])
        for run in runs:
            yield from self._run(run, starts[run[0]], wanted, dtypes, batch_rows)

    def _run(
        self, groups: list[int], row0: int, wanted: list[str], dtypes: dict[str, str],
        batch_rows: int,
    ) -> Iterator[ColumnBatch]:  # fmt: skip
        """Fed columns become numpy (cast later); the others (``--keep``) stay polars
        Series with the file's type and nulls: a nullable integer id stays an integer
        (numpy would make it float with NaN, and one batch's type another's)."""

        it = self.file.iter_batches(batch_size=batch_rows, row_groups=groups, columns=wanted)
        while True:
            try:  # only pyarrow's decoding: corrupt pages surface here
                rb = next(it, None)
            except Exception as exc:  # pyarrow raises ArrowInvalid/OSError/...
                raise DataError(
                    f"'{safe(self.name)}' cannot be read near row {row0 + 1}: "
                    f"{safe(str(exc), 120)}",
                    hint="the Parquet file may be truncated or corrupt",
                    code="invalid_parquet",
                ) from None
            if rb is None:
                return
            df = _frame(rb, self.name)
            place = row_place(self.name, row0)
            cols = {
                c: series_to_numpy(df.get_column(c), place) if c in dtypes else df.get_column(c)
                for c in df.columns
            }
            yield ColumnBatch(self.name, row0, df.height, cols, file_row=row0)
            row0 += df.height


def check_readable(schema: Any, columns: list[str], source: str) -> None:
    """Refuse, naming the column, a type among ``columns`` that cannot be read (before any
    work when a caller checks it up front: a cluster run, on the first input)."""
    import pyarrow as pa

    for f in schema:
        if f.name in columns and pa.types.is_decimal256(f.type) and f.type.precision > 38:
            raise DataError(
                f"'{safe(source)}' column '{safe(f.name)}' is {f.type}: decimals of more "
                "than 38 digits cannot be read",
                hint="write it as decimal128 (38 digits at most), float64 or text",
                code="unsupported_type",
            )


def _frame(rb: Any, source: str) -> pl.DataFrame:
    """A record batch as polars. decimal256 is narrowed to decimal128 when it fits (polars
    panics on 256-bit decimals, a Rust panic with its backtrace on stderr); a type polars
    cannot take otherwise is a data error naming the file."""
    import polars as pl
    import pyarrow as pa

    check_readable(rb.schema, rb.schema.names, source)
    for i, f in enumerate(rb.schema):
        if pa.types.is_decimal256(f.type):
            narrow = pa.decimal128(f.type.precision, f.type.scale)
            rb = rb.set_column(i, f.name, rb.column(i).cast(narrow))
    try:
        df = pl.from_arrow(rb)
    except Exception as exc:  # polars refuses an Arrow type it does not support
        raise DataError(
            f"'{safe(source)}' holds a column type that cannot be read: {safe(str(exc), 120)}",
            hint="drop or convert that column (or leave it out of --keep)",
            code="unsupported_type",
        ) from None
    assert isinstance(df, pl.DataFrame)
    return df


def _pandas_index_columns(schema: Any) -> set[str]:
    import json

    raw = (schema.metadata or {}).get(b"pandas")
    if not raw:
        return set()
    try:
        meta = json.loads(raw)
    except ValueError:
        return set()
    cols = meta.get("index_columns") if isinstance(meta, dict) else None
    return {c for c in cols or [] if isinstance(c, str)}
