"""The one registry of data formats: names, extensions, magic bytes, what each can hold.

A format is chosen by ``--format`` / ``--output-format``, else by the file's extension;
stdin without ``--format`` is sniffed by its magic bytes (NPY, NPZ, Parquet), else CSV.
Which reader opens a format lives in :mod:`modelforge.data.inputs` (``SOURCES``), which
writer writes it in :mod:`modelforge.data.writers` (``WRITERS``), both keyed by these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from modelforge.errors import UsageError
from modelforge.text import escape


@dataclass(frozen=True)
class Format:
    name: str
    extensions: tuple[str, ...]
    kind: str  # "table": rows of named columns; "arrays": named n-d arrays
    magic: tuple[bytes, ...] = ()  # signatures at the start of the file
    readable: bool = True
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.name.upper()

    @property
    def whole(self) -> bool:
        """Can hold outputs that are not one entry per row (scalars, sequences)."""
        return self.kind == "arrays"


REGISTRY: dict[str, Format] = {
    f.name: f
    for f in (
        Format("csv", (".csv",), "table"),
        Format("tsv", (".tsv", ".tab"), "table"),
        Format("parquet", (".parquet", ".pq"), "table", (b"PAR1",), label="Parquet"),
        Format("jsonl", (".jsonl", ".ndjson"), "table", label="JSON Lines"),
        Format("npy", (".npy",), "arrays", (b"\x93NUMPY",)),
        Format("npz", (".npz",), "arrays", (b"PK\x03\x04", b"PK\x05\x06")),
        # one JSON object {"name": nested lists}: --data's form, and whole outputs
        Format("json", (".json",), "arrays", readable=True),
    )
}
FORMATS = tuple(REGISTRY)
_ALIASES = {"ndjson": "jsonl", "pq": "parquet", "txt": "csv"}
_EXTENSIONS = {ext: f.name for f in REGISTRY.values() for ext in f.extensions}

STDIO = "-"


def normalize_format(name: str, option: str = "--format") -> str:
    key = name.strip().lower().lstrip(".")
    key = _ALIASES.get(key, key)
    if key not in REGISTRY:
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


def sniff(head: bytes) -> str | None:
    """The binary format whose signature ``head`` starts with (None: treat as text)."""
    for f in REGISTRY.values():
        if any(head.startswith(m) for m in f.magic):
            if f.name == "parquet" and head[4:5].isascii() and head[4:5].isalnum():
                continue  # a CSV header such as "PAR1x,..." is text
            return f.name
    return None


def input_format(path: str, explicit: str | None) -> str:
    """--format wins; then the extension; stdin is sniffed by the caller (default CSV)."""
    if explicit:
        return normalize_format(explicit)
    if path == STDIO:
        return "csv"
    found = format_from_path(path)
    if found is None:
        raise UsageError(
            f"cannot tell the format of input '{escape(path)}' from its extension",
            hint="name the file " + "/".join(_EXTENSIONS) + " or pass --format",
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
            hint="name the file " + "/".join(_EXTENSIONS) + " or pass --output-format",
            code="unknown_format",
        )
    return found
