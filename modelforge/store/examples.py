"""Golden examples: the first rows of a data file, mapped onto the model exactly as predict
maps them, run, and stored with the version (``models add --example DATA``).

Layout: ``models/<name>/<version>/examples/golden.npz`` (a hard link to its blob under
``blobs/sha256``, like the model files), described by ``meta["examples"]``::

    {"file": "examples/golden.npz", "sha256": "...", "size": 1234, "rows": 256,
     "sources": ["data.csv"], "format": "csv", "onnxruntime": "1.20.1",
     "provider": "CPUExecutionProvider", "created_at": "...",
     "inputs":  [{"name": "X", "key": "i0", "dtype": "float32", "shape": [256, 4]}],
     "outputs": [{"name": "label", "key": "o0", "dtype": "int64", "shape": [256]},
                 {"name": "probabilities", "key": "o1", "dtype": "float32",
                  "shape": [256, 3], "keys_key": "o1_keys"}]}

The file format (plain arrays under short keys, never pickles, byte-for-byte reproducible)
is :mod:`modelforge.model.golden`; the rows are recorded, in a guarded child process (the
model is untrusted) on the CPU provider, by :mod:`modelforge.inference.examples`
(``modelforge.add_model(..., example=DATA)``). This module is the store's side: where the
file lives, its limits, its blob, verify and the record's summary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modelforge.errors import UsageError
from modelforge.model.golden import check_file, load, sha256_file, write_npz
from modelforge.store.layout import link_blob
from modelforge.text import escape

__all__ = [
    "DEFAULT_EXAMPLE_ROWS",
    "ENV_MAX_BYTES",
    "EXAMPLES_FILE",
    "MAX_EXAMPLE_ROWS",
    "PROVIDER",
    "check_file",
    "check_rows",
    "content_entries",
    "examples_path",
    "from_record",
    "link_blob",
    "load",
    "max_bytes",
    "sha256_file",
    "summary",
    "verify_problems",
    "write_npz",
]

EXAMPLES_DIR = "examples"
EXAMPLES_FILE = f"{EXAMPLES_DIR}/golden.npz"
DEFAULT_EXAMPLE_ROWS = 256
MAX_EXAMPLE_ROWS = 10_000
MAX_EXAMPLE_BYTES = 64 * 1024 * 1024  # inputs + outputs, uncompressed
ENV_MAX_BYTES = "MODELFORGE_MAX_EXAMPLE_BYTES"  # overrides MAX_EXAMPLE_BYTES
PROVIDER = "CPUExecutionProvider"


def max_bytes() -> int:
    text = os.environ.get(ENV_MAX_BYTES, "").strip()
    if not text:
        return MAX_EXAMPLE_BYTES
    if not text.isdigit() or int(text) < 1:
        raise UsageError(
            f"{ENV_MAX_BYTES}='{escape(text)}' is not a positive number of bytes",
            code="invalid_option",
        )
    return int(text)


def check_rows(rows: int) -> int:
    if not 1 <= rows <= MAX_EXAMPLE_ROWS:
        raise UsageError(
            f"--example-rows {rows} is outside 1..{MAX_EXAMPLE_ROWS}",
            hint=f"golden examples are a small sample: pass at most {MAX_EXAMPLE_ROWS} rows",
            code="invalid_option",
        )
    return rows


def content_entries(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """What the examples add to a version's content id (same model + other examples = a
    different version)."""
    rec = meta.get("examples")
    if not isinstance(rec, dict):
        return []
    return [{"path": f"../{EXAMPLES_FILE}", "sha256": str(rec.get("sha256"))}]


# ---- reading back -------------------------------------------------------------------------
def examples_path(version_dir: Path) -> Path:
    return version_dir / EXAMPLES_FILE


def from_record(version_dir: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The record with the absolute file path (validate's options carry it to the child)."""
    rec = meta.get("examples")
    if not isinstance(rec, dict):
        return None
    return {**rec, "path": os.fspath(examples_path(version_dir))}


def summary(meta: dict[str, Any]) -> dict[str, Any] | None:
    rec = meta.get("examples")
    if not isinstance(rec, dict):
        return None
    return {
        "rows": rec.get("rows"),
        "sources": rec.get("sources"),
        "sha256": rec.get("sha256"),
        "size": rec.get("size"),
        "onnxruntime": rec.get("onnxruntime"),
        "provider": rec.get("provider"),
        "inputs": [i.get("name") for i in rec.get("inputs", [])],
        "outputs": [o.get("name") for o in rec.get("outputs", [])],
    }


# ---- store integration: verify, import ----------------------------------------------------
def verify_problems(version_dir: Path, meta: dict[str, Any], ref: str) -> list[dict[str, str]]:
    rec = meta.get("examples")
    if not isinstance(rec, dict):
        return []
    problem = check_file(examples_path(version_dir), rec)
    return [] if problem is None else [{"ref": ref, "file": EXAMPLES_FILE, "problem": problem}]
