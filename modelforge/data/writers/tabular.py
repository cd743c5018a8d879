"""Tabular writers: CSV/TSV and JSON Lines stream, Parquet writes row groups as batches
arrive; columns named and flattened by one rule (:func:`.base.flatten`)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from modelforge.data.batch import OutputValue
from modelforge.errors import DataError
from modelforge.text import safe

if TYPE_CHECKING:
    import polars as pl


from modelforge.data.writers.base import Writer, _Sink, _text, flatten, neutralise_text


def _frame(keep: dict[str, Any], outputs: list[OutputValue], *, neutralise: bool) -> pl.DataFrame:
    import polars as pl

    series: list[pl.Series] = []
    for name, values in keep.items():
        s = values.alias(name) if isinstance(values, pl.Series) else pl.Series(name, values)
        series.append(s)
    for o in outputs:
        for name, col in flatten(o):
            series.append(pl.Series(name, _text(col) if col.dtype.kind in "OSU" else col))
    df = pl.DataFrame(series)
    if neutralise:
        renamed = {c: neutralise_text(c) for c in df.columns}
        if any(k != v for k, v in renamed.items()):
            if len(set(renamed.values())) < len(renamed):
                bad = next(k for k, v in renamed.items() if k != v and v in renamed)
                raise DataError(
                    f"column '{safe(bad)}' would be written as '{safe(renamed[bad])}' (a "
                    "leading ' stops spreadsheets running it), which another column is named",
                    hint="rename one of the two columns in the input",
                    code="column_clash",
                )
            df = df.rename(renamed)
        text_cols = [c for c, t in df.schema.items() if t == pl.String]
        if text_cols:
            df = df.with_columns(
                pl.when(
                    pl.col(c).str.contains(r"^[=+\-@\t\r]")
                    & pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).is_null()
                )
                .then(pl.lit("'") + pl.col(c))
                .otherwise(pl.col(c))
                .alias(c)
                for c in text_cols
            )
    return df


class CsvWriter(Writer):
    def __init__(self, sink: _Sink, separator: str = ",") -> None:
        super().__init__(sink)
        self.separator = separator
        self.fmt = "tsv" if separator == "\t" else "csv"
        self.header = True

    def _write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        df = _frame(keep, outputs, neutralise=True)
        df.write_csv(self.sink.fh, separator=self.separator, include_header=self.header)
        self.header = False
        self.sink.fh.flush()


class JsonlWriter(Writer):
    fmt = "jsonl"

    def _write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        _frame(keep, outputs, neutralise=False).write_ndjson(self.sink.fh)
        self.sink.fh.flush()


def _conform(table: Any, schema: Any) -> Any:
    """A later batch whose kept columns have other types than the first's (the inputs
    were written with int32 and int64 ids): cast when lossless, else name the column."""
    import pyarrow as pa

    try:
        return table.cast(schema, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError):
        pass
    for field, first in zip(table.schema, schema, strict=False):
        if field.type != first.type:
            raise DataError(
                f"kept column '{safe(field.name)}' is {field.type} in these rows but was "
                f"{first.type} in the first ones: one Parquet file has one type per column",
                hint="write the inputs with the same column types, or predict them separately",
                code="column_type_changed",
            )
    raise DataError("the kept columns changed between inputs", code="column_type_changed")


class ParquetWriter(Writer):
    """Row groups as batches arrive; columns named and flattened as in CSV."""

    fmt = "parquet"

    def __init__(self, sink: _Sink) -> None:
        super().__init__(sink)
        self._writer: Any = None

    def _write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        import polars as pl
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols: dict[str, Any] = {}
        for name, values in keep.items():
            cols[name] = values.to_arrow() if isinstance(values, pl.Series) else pa.array(values)
        for o in outputs:
            for name, col in flatten(o):
                cols[name] = pa.array(_text(col))
        table = pa.table(cols)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.sink.fh, table.schema)
        elif table.schema != self._writer.schema:
            table = _conform(table, self._writer.schema)
        self._writer.write_table(table)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the output is being discarded anyway
                self._writer.close()
            self._writer = None
        super().abort()
