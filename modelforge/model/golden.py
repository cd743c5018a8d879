"""The golden-examples file format (``examples/golden.npz``): plain arrays under short keys
(``i0``, ``o0``, ``o0_keys`` for ZipMap class keys), strings as fixed-width unicode, never
pickles, written byte-for-byte deterministically (the same model and data give the same
blob). Its record (``meta["examples"]``) describes the keys; see
:mod:`modelforge.store.examples` for where the file lives in the store and
:mod:`modelforge.inference.examples` for how the rows are recorded.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.errors import StoreCorruptError
from modelforge.text import escape

if TYPE_CHECKING:
    import numpy as np

    from modelforge.data.batch import OutputValue


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


def first_rows(batches: Iterable[Any], rows: int) -> tuple[dict[str, np.ndarray], int]:
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
    from modelforge.data.batch import OutputValue
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
