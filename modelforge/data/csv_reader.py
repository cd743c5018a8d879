"""Streaming CSV/TSV reader: record blocks (from :mod:`.csv_stream`) parsed by polars.

Each block is parsed by polars with an explicit schema built from the model's input dtypes.
Blocks that look wrong (a polars error, empty cells, NaN/inf) are parsed a second time as
text and handed on as text: :mod:`modelforge.data.cast` converts them under the cast policy
(the same code as for every format) and names the line and column of the first bad cell.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelforge.data.batch import ColumnBatch
from modelforge.data.csv_stream import (
    _BOM,
    BLOCK_SIZE,
    LONG_LINE,
    MAX_RECORD_BYTES,
    CsvStream,
)
from modelforge.errors import DataError
from modelforge.text import safe

if TYPE_CHECKING:
    import polars as pl

__all__ = ["BLOCK_SIZE", "MAX_RECORD_BYTES", "CsvReader"]

_FAST = {"float32", "float64", "int64", "int32"}


class CsvReader(CsvStream):
    """Reads the header on construction; ``batches()`` streams coerced column arrays."""

    # field counts (only on suspicious blocks) ---------------------------------------
    def _check_fields(self, block: bytes) -> None:
        ncols = len(self.columns)
        if b'"' not in block:
            lines = block.split(b"\n")
            if lines and not lines[-1]:
                lines.pop()
            if block.count(self._d) == len(lines) * (ncols - 1) and all(
                line.strip(b"\r") for line in lines
            ):
                return
            for i, line in enumerate(lines):
                n = line.count(self._d) + 1 if line.strip(b"\r") else 0
                if n != ncols:
                    self._ragged(self.lines + i + 1, n, b"\r" in line.rstrip(b"\r"))
            return
        import csv
        import io

        reader = csv.reader(io.StringIO(block.decode("utf-8"), newline=""), delimiter=self.delim)
        try:
            first = 1  # the line where the next record starts
            for rec in reader:
                if len(rec) != ncols:
                    self._ragged(self.lines + first, len(rec))
                first = reader.line_num + 1
        except csv.Error as exc:
            raise DataError(
                f"input '{self.name}' cannot be parsed near line {self.lines + reader.line_num}: "
                f"{safe(str(exc), 100)}",
                hint="check the quoting of the file",
                code="csv_parse_error",
            ) from None

    def _check_long_lines(self, block: bytes) -> None:
        """A 1 MiB stretch without a newline is a very long line: if it holds more fields
        than the header (and no quotes), refuse it now; polars would spend seconds on it."""
        ncols = len(self.columns)
        for i in range(0, len(block) - LONG_LINE, LONG_LINE):
            if block.find(b"\n", i, i + LONG_LINE) >= 0:
                continue
            if block.find(b'"', i, i + LONG_LINE) < 0:
                fields = block.count(self._d, i, i + LONG_LINE) + 1
                if fields > ncols:
                    line = self.lines + block.count(b"\n", 0, i) + 1
                    raise DataError(
                        f"input '{self.name}' line {line} has more than {fields - 1:,} "
                        f"fields, the header has {ncols}",
                        hint="every row needs one field per header column",
                        code="ragged_row",
                    )

    def _ragged(self, line: int, n: int, cr: bool = False) -> None:
        problem = "is blank" if n == 0 else f"has {n} fields, the header has {len(self.columns)}"
        hint = "every row needs one field per header column; check the delimiter and quotes"
        if cr:  # a bare CR inside the line: lines end with CR alone from here on
            problem += " and holds a carriage return (CR) inside it: mixed line endings"
            hint = "end every line with LF or CRLF (convert the CR-only line endings)"
        raise DataError(f"input '{self.name}' line {line} {problem}", hint=hint, code="ragged_row")

    # batches ------------------------------------------------------------------------
    def batches(self, wanted: list[str], dtypes: dict[str, str]) -> Iterator[ColumnBatch]:
        """Stream blocks of the ``wanted`` columns. ``dtypes`` (column -> numpy dtype the
        column feeds) lets a clean block be parsed straight to that dtype; any other block
        comes back as text (polars String Series), cast later by
        :func:`modelforge.data.cast.cast_column` like every other format."""
        import polars as pl

        kinds = {
            "float32": pl.Float32,
            "float64": pl.Float64,
            "int64": pl.Int64,
            "int32": pl.Int32,
        }
        fast_schema: dict[str, Any] = {
            c: (kinds[dtypes[c]] if dtypes.get(c) in _FAST else pl.String) for c in self.columns
        }
        text_schema: dict[str, Any] = {c: pl.String for c in self.columns}
        fast_ok = bool(dtypes) and all(t in _FAST for t in dtypes.values())
        arrays: dict[str, Any] | None = None
        row0 = 0
        # a block whose wanted columns all parse as numbers needs no UTF-8 check (numbers
        # are ASCII; other columns are never decoded); any other block is checked first
        numeric_only = fast_ok and set(wanted) <= set(dtypes)
        for block in self._blocks():
            if not numeric_only:
                self._utf8_error(block, self.consumed, self.lines)
            self._check_long_lines(block)
            if block.startswith(_BOM):  # polars would drop these bytes silently
                self._check_fields(block)
                raise DataError(
                    f"input '{self.name}' line {self.lines + 1} starts with a UTF-8 byte-order "
                    "mark",
                    hint="remove the stray BOM (files concatenated with cat?)",
                    code="csv_parse_error",
                )
            df: pl.DataFrame | None = None
            if fast_ok:
                try:
                    df = self._parse(block, fast_schema, wanted)
                except pl.exceptions.PolarsError:
                    df = None
                arrays = self._clean(df, dtypes) if df is not None else None
                if arrays is None:
                    df = None
            if df is None:
                if numeric_only:
                    self._utf8_error(block, self.consumed, self.lines)
                self._check_fields(block)
                try:
                    df = self._parse(block, text_schema, wanted)
                except pl.exceptions.PolarsError as exc:
                    raise DataError(
                        f"input '{self.name}' cannot be parsed near line {self.lines + 1}: "
                        f"{safe(str(exc).splitlines()[0], 200)}",
                        hint="check the delimiter and quoting",
                        code="csv_parse_error",
                    ) from None
                cols: dict[str, Any] = {c: df.get_column(c) for c in wanted}
                finite: frozenset[str] = frozenset()
            else:
                finite = frozenset(dtypes)  # _clean saw every value: no NaN, no inf
                assert arrays is not None  # set with df by the fast parse
                cols = {c: arrays[c] if c in arrays else df.get_column(c) for c in wanted}
                if not self._block_quotes:
                    # a clean block without quotes holds one record per line (a blank
                    # line would have been a null row): no need to count its newlines
                    self._known_lines = df.height
            yield ColumnBatch(
                source=self.name,
                start=row0,
                rows=df.height,
                columns=cols,
                file_row=row0,
                bytes_read=self.consumed + len(block),
                line_of=self._line_of(block),
                finite=finite,
                frame=df if finite else None,
            )
            row0 += df.height

    def _line_of(self, block: bytes):  # type: ignore[no-untyped-def]
        """Record ``row`` of ``block`` (0-based) -> its physical line (header = 1)."""
        base, delim = self.lines, self.delim

        def line_of(row: int) -> int:
            return base + _record_line(block, row, delim)

        return line_of

    def _parse(self, block: bytes, schema: dict[str, Any], wanted: list[str]) -> pl.DataFrame:
        import polars as pl

        return pl.read_csv(
            block,
            has_header=False,
            schema=schema,
            columns=[self._index[c] for c in wanted],
            separator=self.delim,
            quote_char='"',
            infer_schema=False,
            raise_if_empty=False,
            truncate_ragged_lines=False,
        )

    @staticmethod
    def _clean(df: pl.DataFrame, dtypes: dict[str, str]) -> dict[str, Any] | None:
        """The arrays of a fast parse that needs no second look (no empty cells, no NaN
        or inf: those go through the text path, whose messages name the cell); None
        otherwise."""
        import numpy as np

        if any(df.null_count().row(0)):
            return None
        arrays = {c: df.get_column(c).to_numpy() for c in dtypes}
        for c, dtype in dtypes.items():
            if dtype.startswith("float") and not np.isfinite(arrays[c]).all():
                return None
        return arrays


def _record_line(block: bytes, record: int, delim: str) -> int:
    """The 1-based line of ``block`` where record ``record`` (0-based) starts; quoted fields
    may span lines. Only called for an error message."""
    if b'"' not in block:
        return record + 1
    import csv
    import io

    reader = csv.reader(io.StringIO(block.decode("utf-8", "replace"), newline=""), delimiter=delim)
    start = 1
    for i, _rec in enumerate(reader):
        if i == record:
            return start
        start = reader.line_num + 1
    return start
