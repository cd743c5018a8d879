"""Writers mirror readers; see :mod:`.base` for the naming rule, clashes and atomic output.

``open_writer(path, fmt)`` is the one entry point; ``WRITERS`` maps each format of
:data:`modelforge.data.formats.REGISTRY` to its writer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from modelforge.data.batch import OutputValue
from modelforge.data.writers.arrays import ArrayWriter
from modelforge.data.writers.base import (
    Writer,
    _Sink,
    check_clashes,
    column_names,
    flatten,
    neutralise_text,
    planned_names,
    temp_name,
)
from modelforge.data.writers.tabular import CsvWriter, JsonlWriter, ParquetWriter, _frame

__all__ = [
    "WRITERS",
    "ArrayWriter",
    "CsvWriter",
    "JsonlWriter",
    "OutputValue",
    "ParquetWriter",
    "Writer",
    "_frame",
    "check_clashes",
    "column_names",
    "flatten",
    "neutralise_text",
    "open_writer",
    "planned_names",
    "temp_name",
]

# format name (see modelforge.data.formats.REGISTRY) -> its writer
WRITERS: dict[str, Callable[[_Sink, str], Writer]] = {
    "csv": lambda sink, fmt: CsvWriter(sink, ","),
    "tsv": lambda sink, fmt: CsvWriter(sink, "\t"),
    "jsonl": lambda sink, fmt: JsonlWriter(sink),
    "parquet": lambda sink, fmt: ParquetWriter(sink),
    "npy": ArrayWriter,
    "npz": ArrayWriter,
    "json": ArrayWriter,
}


def open_writer(
    path: str | None,
    fmt: str,
    *,
    stdout: IO[bytes] | None = None,
    temp_path: str | None = None,
) -> Writer:
    return WRITERS[fmt](_Sink(path, stdout, temp_path), fmt)
