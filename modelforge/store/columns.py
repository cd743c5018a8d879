"""Column maps: the ordered columns feeding a model's single 2-D input (``--columns``).

Checked as a list (non-empty, no duplicates) and against the input's width; ``models add``
says when such a model gets none; ``--columns-from DATA`` reads them from a data file's
header: only the first line of a CSV (or TSV) file, or the schema of a Parquet file.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from modelforge.errors import DataError, NotFoundError, UsageError
from modelforge.text import escape

MAX_HEADER_BYTES = 1024 * 1024


def _csv_header(path: Path, delimiter: str | None) -> list[str]:
    with open(path, "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES)
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            f"the header of '{escape(path)}' is not UTF-8 text",
            hint="pass a CSV or Parquet file whose first row names the columns",
            code="invalid_header",
        ) from None
    if b"\0" in head or any(ord(c) < 32 and c != "\t" for c in text):
        raise DataError(
            f"the first line of '{escape(path)}' is not a text header (the file looks binary)",
            hint="pass a CSV or Parquet file whose first row names the columns",
            code="invalid_header",
        )
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])


def _parquet_header(path: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise DataError("reading Parquet needs pyarrow", code="missing_dependency") from None
    try:
        return list(pq.read_schema(path).names)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"'{escape(path)}' is not a readable Parquet file ({escape(exc)})",
            code="invalid_parquet",
        ) from None


def header_columns(path: str | os.PathLike[str], *, delimiter: str | None = None) -> list[str]:
    """The column names of a CSV/TSV (first line) or Parquet (schema) file, in order."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(
            f"--columns-from file '{escape(p)}' does not exist",
            hint="pass a CSV or Parquet file with the training data's header",
            code="file_not_found",
        )
    if p.suffix.lower() in (".parquet", ".pq"):
        cols = _parquet_header(p)
    else:
        cols = _csv_header(p, delimiter)
    cols = [c.strip() for c in cols]
    if not cols or not any(cols):
        raise DataError(
            f"'{escape(p)}' has no header row to take column names from",
            hint="the first line must name the columns, e.g. a,b,c",
            code="invalid_header",
        )
    return cols


def validate_columns(columns: list[str] | None) -> list[str] | None:
    if columns is None:
        return None
    cols = [c.strip() for c in columns]
    if not cols or any(not c for c in cols):
        raise UsageError(
            "--columns needs a comma-separated list of column names",
            hint="e.g. --columns sepal_length,sepal_width",
            code="invalid_columns",
        )
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        raise UsageError(
            f"--columns names {', '.join(map(escape, dupes))} more than once",
            code="invalid_columns",
        )
    return cols


def column_notes(schema: Any, columns: list[str] | None) -> list[str]:
    """Advice when a single 2-D input model gets no column map (predict would then feed
    CSV columns by position, and reordered columns would give wrong answers silently)."""
    if columns is not None or len(schema.inputs) != 1:
        return []
    spec = schema.inputs[0]
    if not spec.is_tensor or spec.rank != 2:
        return []
    width = spec.shape[1] if spec.shape and isinstance(spec.shape[1], int) else None
    if width is not None and width <= 1:
        return []
    return [
        f"input '{escape(spec.name)}' {spec.shape_str()} takes columns by position and no "
        "column map was stored: a CSV with reordered columns would give wrong answers. "
        "Store the order with --columns a,b,... or --columns-from DATA (a CSV/Parquet file "
        "with the training header)"
    ]


def check_columns_fit(schema: Any, columns: list[str] | None) -> None:
    """--columns must name as many columns as the single 2-D input has features."""
    if columns is None:
        return
    if len(schema.inputs) != 1 or schema.inputs[0].rank != 2:
        names = ", ".join(escape(i.name) for i in schema.inputs[:5])
        raise UsageError(
            "--columns applies to a model with one 2-D input; this model's inputs are "
            f"{names or '(none)'}",
            hint="drop --columns; predict maps columns to inputs by name (or pass --map)",
            code="invalid_columns",
        )
    spec = schema.inputs[0]
    width = spec.shape[1] if spec.shape else None
    if isinstance(width, int) and width != len(columns):
        raise UsageError(
            f"--columns names {len(columns)} column(s) but input '{escape(spec.name)}' "
            f"{spec.shape_str()} takes {width}",
            hint="list exactly one column per feature, in the order the model was trained on",
            code="invalid_columns",
        )
