"""Data formats: which reader or writer handles a file, from its extension or --format."""

from __future__ import annotations

from pathlib import PurePath

from modelforge.errors import UsageError
from modelforge.text import escape

FORMATS = ("csv", "tsv", "npy", "npz", "parquet", "jsonl")
TABULAR = frozenset({"csv", "tsv", "parquet", "jsonl"})
ARRAYS = frozenset({"npy", "npz"})

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".npy": "npy",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_ALIASES = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet", "txt": "csv"}

STDIO = "-"


def normalize_format(name: str, option: str = "--format") -> str:
    key = name.strip().lower().lstrip(".")
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise UsageError(
            f"unknown data format '{escape(name)}' for {option}",
            hint="use one of: " + ", ".join(FORMATS),
            code="unknown_format",
        )
    return key


def format_from_path(path: str) -> str | None:
    """The format an extension names (``data.csv`` -> csv; ``data.csv.gz`` -> None)."""
    if path == STDIO:
        return None
    return _EXTENSIONS.get(PurePath(path).suffix.lower())


def input_format(path: str, explicit: str | None) -> str:
    """--format wins; then the extension; stdin (or an unknown extension) is an error/CSV."""
    if explicit:
        return normalize_format(explicit)
    if path == STDIO:
        return "csv"
    found = format_from_path(path)
    if found is None:
        raise UsageError(
            f"cannot tell the format of input '{escape(path)}' from its extension",
            hint="name the file .csv/.tsv/.npy/.npz/.parquet/.jsonl or pass --format",
            code="unknown_format",
        )
    return found


def output_format(path: str | None, explicit: str | None) -> str:
    """--output-format wins; then -o's extension; stdout defaults to CSV."""
    if explicit:
        return normalize_format(explicit, "--output-format")
    if path is None or path == STDIO:
        return "csv"
    found = format_from_path(path)
    if found is None:
        raise UsageError(
            f"cannot tell the output format of '{escape(path)}' from its extension",
            hint="name the file .csv/.tsv/.npy/.npz/.parquet/.jsonl or pass --output-format",
            code="unknown_format",
        )
    return found
