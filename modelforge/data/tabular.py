"""Parquet and JSON Lines readers: typed columns, streamed, coerced later by the mapper."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from modelforge.data.batch import ColumnBatch
from modelforge.data.csv_reader import MAX_RECORD_BYTES
from modelforge.errors import DataError
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

JSONL_BLOCK = 8 * 1024 * 1024


def series_to_numpy(s: pl.Series) -> np.ndarray:
    """A polars column as numpy; list columns become 2-D (or deeper) arrays."""
    import numpy as np
    import polars as pl

    if isinstance(s.dtype, (pl.List, pl.Array)):
        values = s.to_list()
        try:
            arr = np.array(values)
        except ValueError:
            arr = np.array(values, dtype=object)
        if arr.dtype == object:
            raise DataError(
                f"column '{safe(s.name)}' holds lists of different lengths or empty cells",
                hint="every row needs a list of the same length",
                code="ragged_list",
            )
        return arr
    if s.dtype == pl.String:
        return s.to_numpy().astype(object)
    return s.to_numpy()


class ParquetReader:
    def __init__(self, source: str | IO[bytes], name: str) -> None:
        import pyarrow.parquet as pq

        self.name = name
        try:
            self.file = pq.ParquetFile(source)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for bad files
            raise DataError(
                f"'{safe(name)}' is not a readable Parquet file: {safe(str(exc), 120)}",
                hint="check the file, or pass --format",
                code="invalid_parquet",
            ) from None
        self.columns = list(self.file.schema_arrow.names)
        self.total_rows = self.file.metadata.num_rows

    def batches(
        self,
        wanted: list[str],
        batch_rows: int,
        start: int = 0,
        row_groups: tuple[int, ...] | None = None,
    ) -> Iterator[ColumnBatch]:
        """Stream ``wanted`` columns; ``row_groups``: only those (ascending), with row
        numbers still counted from the start of the file."""
        import polars as pl

        row0 = 0
        if row_groups:
            meta = self.file.metadata
            row0 = sum(meta.row_group(i).num_rows for i in range(row_groups[0]))
        groups = list(row_groups) if row_groups is not None else None
        try:
            for rb in self.file.iter_batches(
                batch_size=batch_rows, columns=wanted, row_groups=groups
            ):
                df = pl.from_arrow(rb)
                assert isinstance(df, pl.DataFrame)
                cols = {c: series_to_numpy(df.get_column(c)) for c in df.columns}
                yield ColumnBatch(self.name, start, df.height, cols, file_row=row0)
                start += df.height
                row0 += df.height
        except DataError:
            raise
        except Exception as exc:  # corrupt pages surface while reading
            raise DataError(
                f"'{safe(self.name)}' cannot be read near row {row0 + 1}: {safe(str(exc), 120)}",
                hint="the Parquet file may be truncated or corrupt",
                code="invalid_parquet",
            ) from None


class JsonlReader:
    """JSON Lines: one object per line; blocks split at newlines, parsed by polars.

    A line is capped at ``MAX_RECORD_BYTES`` (as a CSV record), so a file without newlines
    (``/dev/zero``, a huge single line) fails fast with ``line_too_long``. Line numbers are
    physical lines of the file, from 1, blank lines included."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self.stream = stream
        self.name = name
        self._rest = b""
        self._lines = 0  # newlines handed out so far
        self._first, self._first_line = self._next_block()
        if not self._first.strip():
            raise DataError(
                f"input '{safe(name)}' is empty",
                code="empty_input",
                hint="pass one JSON object per line",
            )
        self._first_df = self._parse(self._first, self._first_line)
        self.columns = list(self._first_df.columns)

    def _too_long(self) -> DataError:
        return DataError(
            f"input '{safe(self.name)}' line {self._lines + 1} is longer than "
            f"{MAX_RECORD_BYTES // (1024 * 1024)} MiB",
            hint="write one JSON object per line (is this really a JSON Lines file?)",
            code="line_too_long",
        )

    def _next_block(self) -> tuple[bytes, int]:
        """The next stretch of whole lines (at least one non-blank) and the number of lines
        before it; chunks are collected in a list and joined once."""
        parts: list[bytes] = [self._rest] if self._rest else []
        pending = len(self._rest)  # bytes of the unfinished line
        self._rest = b""
        while True:
            data = self.stream.read(JSONL_BLOCK)
            if not data:
                if pending > MAX_RECORD_BYTES:
                    raise self._too_long()
                block = b"".join(parts)
                line0 = self._lines
                self._lines += block.count(b"\n")
                return block, line0
            cut = data.rfind(b"\n")
            if cut < 0:
                parts.append(data)
                pending += len(data)
                if pending > MAX_RECORD_BYTES:
                    raise self._too_long()
                continue
            if pending + data.find(b"\n") > MAX_RECORD_BYTES:
                raise self._too_long()
            parts.append(data[: cut + 1])
            self._rest = data[cut + 1 :]
            block = b"".join(parts)
            line0 = self._lines
            self._lines += block.count(b"\n")
            if block.strip():
                return block, line0
            parts = [self._rest] if self._rest else []
            pending = len(self._rest)
            self._rest = b""

    def _parse(self, block: bytes, line0: int) -> pl.DataFrame:
        import json

        import polars as pl

        try:
            return pl.read_ndjson(block)
        except Exception:  # polars raises ComputeError and friends on bad JSON
            pass
        for i, line in enumerate(block.split(b"\n")):
            if not line.strip():
                continue
            try:
                value: Any = json.loads(line)
            except ValueError as exc:
                raise DataError(
                    f"input '{safe(self.name)}' line {line0 + i + 1} is not valid JSON: "
                    f"{safe(str(exc), 80)}",
                    hint="write one JSON object per line",
                    code="invalid_json",
                ) from None
            if not isinstance(value, dict):
                raise DataError(
                    f"input '{safe(self.name)}' line {line0 + i + 1} is not a JSON object",
                    hint='write one object per line, e.g. {"x": [1, 2]}',
                    code="invalid_json",
                )
        raise DataError(
            f"input '{safe(self.name)}' near line {line0 + 1} has values of mixed types",
            hint="use one JSON type per key",
            code="invalid_json",
        )

    def batches(self, wanted: list[str], start: int = 0) -> Iterator[ColumnBatch]:
        row0 = 0
        line0 = self._first_line
        df: pl.DataFrame | None = self._first_df
        while df is not None:
            missing = [c for c in wanted if c not in df.columns]
            if missing:
                raise DataError(
                    f"input '{safe(self.name)}' rows from line {line0 + 1} lack key "
                    f"'{safe(missing[0])}'",
                    hint="every line needs the same keys",
                    code="missing_column",
                )
            cols = {c: series_to_numpy(df.get_column(c)) for c in wanted}
            yield ColumnBatch(self.name, start, df.height, cols, file_row=row0)
            start += df.height
            row0 += df.height
            block, line0 = self._next_block()
            df = self._parse(block, line0) if block.strip() else None
