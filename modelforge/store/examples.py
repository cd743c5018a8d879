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

The NPZ holds plain arrays only (strings as fixed-width unicode, never pickles) under short
keys (``i0``, ``o0``, ``o0_keys`` for ZipMap class keys); it is written byte-for-byte
deterministically, so the same model and data give the same blob. The rows are recorded
in a guarded child process (the model is untrusted) on the CPU provider.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.errors import DataError, StoreCorruptError, UsageError
from modelforge.text import escape, human_bytes, safe

if TYPE_CHECKING:
    import numpy as np

    from modelforge.data.writers import OutputValue

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


# ---- NPZ without pickles, byte-for-byte reproducible ----------------------------------------
def _plain(arr: np.ndarray) -> np.ndarray:
    """Object arrays (onnxruntime's strings) become fixed-width unicode; nothing pickles."""
    import numpy as np

    if arr.dtype == object:
        return np.asarray(arr.astype(str))
    return np.ascontiguousarray(arr)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


# ---- recording (runs in the guarded child) ------------------------------------------------
def _first_rows(batches: Iterable[Any], rows: int) -> tuple[dict[str, np.ndarray], int]:
    import numpy as np

    parts: dict[str, list[np.ndarray]] = {}
    got = 0
    for batch in batches:
        take = min(batch.rows, rows - got)
        for k, v in batch.feeds.items():
            parts.setdefault(k, []).append(v[:take])
        got += take
        if got >= rows:
            break
    return {k: np.concatenate(v) for k, v in parts.items()}, got


def _spec(name: str, key: str, arr: np.ndarray) -> dict[str, Any]:
    return {"name": name, "key": key, "dtype": str(arr.dtype), "shape": list(arr.shape)}


def pack(
    feeds: dict[str, np.ndarray], outputs: list[OutputValue]
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]], list[dict[str, Any]]]:
    """Arrays to store (short keys) and the input/output descriptions of the manifest."""
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    ins, outs = [], []
    for i, (name, arr) in enumerate(feeds.items()):
        arrays[f"i{i}"] = _plain(arr)
        ins.append(_spec(name, f"i{i}", arrays[f"i{i}"]))
    for i, out in enumerate(outputs):
        arrays[f"o{i}"] = _plain(out.array)
        spec = _spec(out.name, f"o{i}", arrays[f"o{i}"])
        if out.keys is not None:
            arrays[f"o{i}_keys"] = _plain(np.asarray(out.keys))
            spec["keys_key"] = f"o{i}_keys"
        outs.append(spec)
    return arrays, ins, outs


def run_feeds(model: str, feeds: dict[str, np.ndarray], providers: list[str] | None = None) -> Any:
    """Run stored feeds (exact dtypes already) through the public predict API."""
    from modelforge.data.writers import OutputValue
    from modelforge.inference import iter_predict

    parts = list(iter_predict(model, dict(feeds), providers=providers or ["cpu"]))
    if len(parts) == 1:
        return parts[0].outputs
    import numpy as np

    return [
        OutputValue(o.name, np.concatenate([p.outputs[i].array for p in parts]), o.keys)
        for i, o in enumerate(parts[0].outputs)
    ]


def record_examples(
    model_path: str,
    data: list[str],
    columns: list[str] | None,
    rows: int,
    out_path: str,
    limit: int = MAX_EXAMPLE_BYTES,
) -> dict[str, Any]:
    """Entry point in the guarded child: map, run, write the NPZ; returns the manifest."""
    import onnxruntime

    from modelforge.inference import iter_feeds

    # mapped as predict maps data onto the stored version: ``columns`` is its column map
    feeds, got = _first_rows(iter_feeds(model_path, data, stored_columns=columns), rows)
    if got == 0:
        raise DataError(
            f"--example {', '.join(safe(d) for d in data)} has no rows",
            hint="pass a data file with at least one row",
            code="no_rows",
        )
    outputs = run_feeds(model_path, feeds)
    arrays, ins, outs = pack(feeds, outputs)
    total = sum(a.nbytes for a in arrays.values())
    if total > limit:
        per_row = max(1, total // got)
        raise DataError(
            f"golden examples from {', '.join(safe(d) for d in data)} would take "
            f"{human_bytes(total)} for {got} rows, over the limit of {human_bytes(limit)}",
            hint=f"pass --example-rows {max(1, limit // per_row)} or fewer (or raise "
            f"{ENV_MAX_BYTES})",
            code="examples_too_large",
            details={"bytes": total, "rows": got, "limit": limit},
        )
    write_npz(Path(out_path), arrays)
    return {
        "rows": got,
        "sources": [os.fspath(d) for d in data],
        "onnxruntime": onnxruntime.__version__,
        "provider": PROVIDER,
        "inputs": ins,
        "outputs": outs,
    }


def stage_examples(
    staging_dir: Path,
    model_path: Path,
    data: str | os.PathLike[str] | list[str],
    *,
    rows: int,
    columns: list[str] | None,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
) -> dict[str, Any]:
    """Record golden examples into ``staging_dir/examples`` (guarded child); the record for
    ``meta["examples"]``."""
    from modelforge.engine.sandbox import run_guarded

    check_rows(rows)
    sources = [os.fspath(d) for d in data] if isinstance(data, list) else [os.fspath(data)]
    out = staging_dir / EXAMPLES_FILE
    manifest = run_guarded(
        record_examples,
        os.fspath(model_path),
        sources,
        columns,
        rows,
        os.fspath(out),
        max_bytes(),  # read here: a forkserver child may predate the environment
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        what="recording golden examples",
    )
    digest, size = sha256_file(out)
    return {
        "file": EXAMPLES_FILE,
        "sha256": digest,
        "size": size,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        **manifest,
    }


def link_blob(blob: Path, staged: Path) -> None:
    """Share the blob with identical bytes (or make this file the blob); as add does."""
    blob.parent.mkdir(parents=True, exist_ok=True)
    try:
        if blob.exists():
            tmp = staged.with_name(staged.name + ".lnk")
            os.link(blob, tmp)
            os.replace(tmp, staged)
        else:
            os.link(staged, blob)
        os.chmod(blob, 0o444)
    except OSError:
        return  # no hard links on this filesystem: keep the private copy


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


def check_file(path: Path, record: dict[str, Any]) -> str | None:
    """None when the file is present with its recorded size and sha256, else the problem."""
    if not path.is_file():
        return "missing"
    digest, size = sha256_file(path)
    if size != record.get("size"):
        return f"size {size} != recorded {record.get('size')}"
    if digest != record.get("sha256"):
        return "sha256 mismatch (tampered or corrupt)"
    return None


def load(path: Path, record: dict[str, Any], what: str) -> tuple[dict[str, Any], list[Any]]:
    """(input name -> array, [OutputValue]) of a stored examples file; hash checked first."""
    from modelforge.data.writers import OutputValue
    from modelforge.model.checks.parity import load_npz

    problem = check_file(path, record)
    if problem is not None:
        raise StoreCorruptError(
            f"golden examples of {what} ('{escape(path)}'): {problem}",
            hint="restore the file from a backup or an export, or add the version again",
            code="examples_corrupt",
        )
    arrays = load_npz(os.fspath(path), "golden examples")
    try:
        feeds = {str(s["name"]): arrays[str(s["key"])] for s in record["inputs"]}
        outputs = []
        for s in record["outputs"]:
            keys = arrays[str(s["keys_key"])].tolist() if s.get("keys_key") else None
            outputs.append(OutputValue(str(s["name"]), arrays[str(s["key"])], keys))
    except (KeyError, TypeError) as exc:
        raise StoreCorruptError(
            f"golden examples of {what} do not match their record ({escape(exc)})",
            hint="add the version again",
            code="examples_corrupt",
        ) from None
    return feeds, outputs


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
