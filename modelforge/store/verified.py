"""Which stored external-data files were already hashed on load, so that opening a large
store model does not re-read gigabytes of weights every time.

An entry is keyed by the file's path, inode, size, mtime and ctime (nanoseconds) and the
recorded sha256. Any write to the file, a chmod, a rename over it or a new hard link
changes its ctime, which no user tool can set back; so a file whose key is present was
hashed in exactly this state. (Bit rot below the filesystem is ``models verify``'s job: it
always re-hashes.) The cache lives in the user cache directory (``MODELFORGE_CACHE``); an
unreadable or unwritable cache only costs a re-hash.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from modelforge import paths

CACHE_FILE = "verified-files.json"
CACHE_SCHEMA_VERSION = 1
MAX_ENTRIES = 4096


def file_key(path: Path, st: os.stat_result, sha256: str) -> str:
    return "|".join(map(str, (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha256)))


def _cache_path() -> Path:
    return paths.cache_dir() / CACHE_FILE


def _load() -> list[str]:
    try:
        with open(_cache_path(), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("schema_version") != CACHE_SCHEMA_VERSION:
        return []
    entries = data.get("entries")
    return [e for e in entries if isinstance(e, str)] if isinstance(entries, list) else []


def is_verified(key: str) -> bool:
    return key in set(_load())


def remember(keys: list[str]) -> None:
    """Add ``keys`` (most recent last; the oldest entries are dropped past MAX_ENTRIES)."""
    if not keys:
        return
    from modelforge.store.layout import write_json_atomic

    entries = [e for e in _load() if e not in keys] + keys
    data = {"schema_version": CACHE_SCHEMA_VERSION, "entries": entries[-MAX_ENTRIES:]}
    with contextlib.suppress(OSError):  # an optimisation only
        write_json_atomic(_cache_path(), data)
