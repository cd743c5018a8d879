"""JSON Lines input: one object per line; blocks split at newlines, parsed by polars.

A block polars refuses is looked at line by line (only then) so that the message names the
line: invalid JSON, a line that is not an object, ``NaN``/``Infinity`` literals (not JSON),
numbers beyond the float range, or a key whose JSON type differs from its first line's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from modelforge.data.batch import ColumnBatch
from modelforge.data.csv_reader import MAX_RECORD_BYTES
from modelforge.data.tabular import _line_place, series_to_numpy
from modelforge.errors import DataError
from modelforge.text import safe

if TYPE_CHECKING:
    import polars as pl

JSONL_BLOCK = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


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
        if self._first.startswith(_BOM):  # a UTF-8 byte-order mark, as CSV accepts it
            self._first = self._first[len(_BOM) :]
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
        import polars as pl

        try:
            return pl.read_ndjson(block)
        except Exception:  # polars raises ComputeError and friends on bad JSON
            pass
        raise self._why(block, line0)

    def _why(self, block: bytes, line0: int) -> DataError:
        """The first line of ``block`` that polars could not take, and why."""
        import json

        def where(i: int) -> str:
            return f"input '{safe(self.name)}' line {line0 + i + 1}"

        def constant(name: str) -> Any:
            raise _NotANumber(f"{name} is not valid JSON")

        def number(text: str) -> float:
            value = float(text)
            if value in (float("inf"), float("-inf")):
                raise _NotANumber(f"{text[:40]} is beyond the float range")
            return value

        kinds: dict[str, tuple[str, int]] = {}
        for i, line in enumerate(block.split(b"\n")):
            if not line.strip():
                continue
            try:
                value: Any = json.loads(line, parse_constant=constant, parse_float=number)
            except (ValueError, RecursionError) as exc:
                why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                return DataError(
                    f"{where(i)} is not valid JSON: {safe(why, 80)}",
                    hint="write null for a missing value, and numbers within the float range"
                    if isinstance(exc, _NotANumber)
                    else "write one JSON object per line",
                    code="invalid_json",
                )
            if not isinstance(value, dict):
                return DataError(
                    f"{where(i)} is not a JSON object",
                    hint='write one object per line, e.g. {"x": [1, 2]}',
                    code="invalid_json",
                )
            for key, v in value.items():
                kind = _json_kind(v)
                first = kinds.setdefault(key, (kind, i))
                if kind != "null" and first[0] == "null":
                    kinds[key] = (kind, i)
                elif kind not in ("null", first[0]):
                    return DataError(
                        f"{where(i)}: key '{safe(key)}' holds {kind}, but {first[0]} on line "
                        f"{line0 + first[1] + 1}",
                        hint="use one JSON type per key (numbers, text, true/false, lists "
                        "or objects)",
                        code="invalid_json",
                    )
        return DataError(
            f"input '{safe(self.name)}' near line {line0 + 1} cannot be read as JSON Lines",
            hint="use one JSON type per key, and one object per line",
            code="invalid_json",
        )

    def batches(self, wanted: list[str], dtypes: dict[str, str]) -> Iterator[ColumnBatch]:
        row0 = 0
        block, line0 = self._first, self._first_line
        df: pl.DataFrame | None = self._first_df
        while df is not None:
            missing = [c for c in wanted if c not in df.columns]
            line_of = _line_numbers(block, line0)
            if missing:
                raise DataError(
                    f"input '{safe(self.name)}' rows from line {line_of(0)} lack key "
                    f"'{safe(missing[0])}'",
                    hint="every line needs the same keys",
                    code="missing_column",
                )
            place = _line_place(self.name, line_of)
            # fed columns become numpy (cast later); --keep columns stay polars Series with
            # the file's types and nulls (a nullable integer id stays an integer), as Parquet
            cols = {
                c: series_to_numpy(df.get_column(c), place) if c in dtypes else df.get_column(c)
                for c in wanted
            }
            yield ColumnBatch(self.name, row0, df.height, cols, file_row=row0, line_of=line_of)
            row0 += df.height
            block, line0 = self._next_block()
            df = self._parse(block, line0) if block.strip() else None


def _line_numbers(block: bytes, line0: int) -> Callable[[int], int]:
    """Row ``row`` of a JSON Lines block (0-based; polars skips blank lines) -> its
    physical line in the file, from 1. Counted only when a message needs it."""
    lines: list[int] = []

    def line_of(row: int) -> int:
        if not lines:
            parts = block.split(b"\n")
            lines.extend(line0 + i + 1 for i, part in enumerate(parts) if part.strip())
        return lines[row]

    return line_of


class _NotANumber(ValueError):
    """NaN/Infinity literals (Python's json accepts them) and numbers beyond float64."""


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"
