"""The on-disk layout of a store, atomic JSON writes, and the store lock.

::

    <root>/
      store.json                      {"format": "modelforge-store", "schema_version": 1}
      blobs/sha256/<aa>/<rest>        content-addressed file bytes (read-only, shared)
      models/<name>/<version>/        one directory per version, appears by atomic rename
          meta.json                   everything recorded at add time (versioned schema)
          files/<model>.onnx          hard links to blobs, laid out as the model expects
          files/<external data ...>
      models/<name>/aliases.json      {"prod": 3, ...}
      models/<name>/.removed/<version> empty markers: removed numbers are never reused
      tmp/                            staging directories (<pid>-<random>), cleaned on next write
      locks/store.lock                held while committing, removing or tagging

``latest`` is never stored: it is the highest version directory holding a meta.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelforge import paths
from modelforge.errors import StoreCorruptError, StoreError
from modelforge.store.names import is_version_text
from modelforge.text import escape

STORE_FORMAT = "modelforge-store"
STORE_SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 60.0


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def link_blob(blob: Path, staged: Path) -> None:
    """Make ``staged`` share the blob with its bytes: a hard link to the existing blob, or
    this file becomes the blob. On filesystems without hard links the staged copy stays (no
    de-duplication). Callers hold the store lock."""
    blob.parent.mkdir(parents=True, exist_ok=True)
    try:
        if blob.exists():
            tmp = staged.with_name(staged.name + ".lnk")
            os.link(blob, tmp)
            os.replace(tmp, staged)
        else:
            os.link(staged, blob)
            fsync_dir(blob.parent)
        os.chmod(blob, 0o444)
    except OSError:
        return


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same directory, fsync, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def hash_file(path: str | os.PathLike[str], *, chunk: int = 4 * 1024 * 1024) -> tuple[str, int]:
    """sha256 hex digest and size of a stored file (read in chunks)."""
    import hashlib

    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise StoreCorruptError(
            f"{what} '{escape(path)}' is unreadable or not valid JSON ({escape(exc)})",
            hint="run 'modelforge models verify' to see every problem; remove or restore the "
            "damaged version",
        ) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _version_number(dirname: str) -> int | None:
    """The version a folder name is, written as the store writes it ('7', never '007' or
    '٧'): another spelling would name a folder that version_dir() never finds."""
    if is_version_text(dirname) and dirname == str(int(dirname)):
        return int(dirname)
    return None


class Store:
    """Paths and low-level operations of one store root."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = paths.store_root(root)

    # locations ---------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def name_dir(self, name: str) -> Path:
        return self.models_dir / name

    def version_dir(self, name: str, version: int) -> Path:
        return self.models_dir / name / str(version)

    def aliases_path(self, name: str) -> Path:
        return self.models_dir / name / "aliases.json"

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256[:2] / sha256[2:]

    # reading -----------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / "store.json").is_file() or self.models_dir.is_dir()

    def names(self) -> list[str]:
        self.check_marker()  # a missing root is fine here: "no models in the store"
        if not self.models_dir.is_dir():
            return []
        return sorted(p.name for p in self.models_dir.iterdir() if p.is_dir())

    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name`` (directories holding meta.json), ascending."""
        d = self.name_dir(name)
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            if _version_number(p.name) is not None and (p / "meta.json").is_file():
                out.append(int(p.name))
        return sorted(out)

    def removed_versions(self, name: str) -> list[int]:
        """Versions that existed and were removed: their numbers are never given out again."""
        d = self.name_dir(name) / ".removed"
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if _version_number(p.name) is not None)

    def mark_removed(self, name: str, version: int) -> None:
        d = self.name_dir(name) / ".removed"
        d.mkdir(parents=True, exist_ok=True)
        (d / str(version)).touch()
        fsync_dir(d)

    def aliases(self, name: str) -> dict[str, int]:
        path = self.aliases_path(name)
        try:
            data = read_json(path, "alias file")
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in data.items()
        ):
            raise StoreCorruptError(
                f"alias file '{escape(path)}' does not map aliases to versions",
                hint="fix or delete it, then re-tag with 'modelforge models tag'",
            )
        return dict(data)

    # writing -----------------------------------------------------------------------
    def check_root(self) -> None:
        """Refuse a store root that is a file, or that sits under a file."""
        for p in (self.root, *self.root.parents):
            if p.exists():
                if not p.is_dir():
                    what = "" if p == self.root else f" (its parent '{escape(p)}' is a file)"
                    raise StoreError(
                        f"the store root '{escape(self.root)}' is not a folder{what}",
                        hint="point --store or MODELFORGE_HOME at a folder (it is created if "
                        "missing)",
                        code="store_not_a_folder",
                    )
                return

    def check_marker(self) -> None:
        """Refuse a store written by a newer ModelForge (its layout may differ), or a folder
        whose store.json belongs to something else. A missing marker is fine (created).
        Checks the root first (:meth:`check_root`)."""
        self.check_root()
        marker = self.root / "store.json"
        try:
            raw = marker.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreCorruptError(
                f"cannot read the store marker '{escape(marker)}': {exc.strerror or exc}",
                hint="fix its permissions",
            ) from None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
            raise StoreCorruptError(
                f"'{escape(marker)}' is not a ModelForge store marker, so '{escape(self.root)}' "
                "does not look like a ModelForge store",
                hint="point --store or MODELFORGE_HOME at a ModelForge store or an empty "
                "folder; if this is your store, delete store.json and it is written again",
            )
        version = doc.get("schema_version")
        if type(version) is not int or not 1 <= version <= STORE_SCHEMA_VERSION:
            raise StoreCorruptError(
                f"the store at '{escape(self.root)}' has store schema_version "
                f"{escape(str(version)[:20])}; this ModelForge knows {STORE_SCHEMA_VERSION}",
                hint="upgrade ModelForge (pip install -U modelforge) to use this store",
                code="store_too_new",
            )

    def init(self) -> None:
        """Create the layout (idempotent)."""
        self.check_marker()
        try:
            for d in (self.models_dir, self.blobs_dir, self.tmp_dir, self.root / "locks"):
                d.mkdir(parents=True, exist_ok=True)
            marker = self.root / "store.json"
            if not marker.exists():
                write_json_atomic(
                    marker, {"format": STORE_FORMAT, "schema_version": STORE_SCHEMA_VERSION}
                )
        except OSError as exc:
            raise self.write_error(exc) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The store-wide lock for commits, removals and alias changes."""
        from filelock import FileLock, Timeout

        try:
            self.init()
            lock = FileLock(str(self.root / "locks" / "store.lock"), timeout=LOCK_TIMEOUT_S)
            lock.acquire()
        except Timeout:
            raise StoreError(
                f"the store at '{escape(self.root)}' stayed locked for {LOCK_TIMEOUT_S:.0f} s",
                hint="another modelforge process is writing; retry when it is done",
                code="store_locked",
            ) from None
        except OSError as exc:  # read-only file system, permissions, disk full
            raise self.write_error(exc) from None
        try:
            yield
        except OSError as exc:  # everything done under the lock writes into the store
            raise self.write_error(exc) from None
        finally:
            lock.release()

    def write_error(self, exc: OSError) -> StoreError:
        """A write into the store failed (disk full, quota, read-only, permissions)."""
        return StoreError(
            f"cannot write to the store at '{escape(self.root)}': {exc.strerror or exc}",
            hint="free disk space or fix permissions, then retry; nothing was changed",
            code="store_write_failed",
        )

    def new_staging_dir(self, kind: str) -> Path:
        self.init()
        path = self.tmp_dir / f"{os.getpid()}-{kind}-{os.urandom(6).hex()}"
        try:
            path.mkdir()
        except OSError as exc:
            raise self.write_error(exc) from None
        return path

    def clean_stale_staging(self) -> list[str]:
        """Remove staging directories left behind by processes that no longer run."""
        removed: list[str] = []
        if not self.tmp_dir.is_dir():
            return removed
        for p in self.tmp_dir.iterdir():
            pid_text = p.name.split("-", 1)[0]
            pid = int(pid_text) if is_version_text(pid_text) else None
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                continue
            if pid is not None and pid == os.getpid():
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
        return removed

    def gc_blobs(self) -> int:
        """Delete blobs no version links to any more (link count 1). Call under the lock."""
        removed = 0
        if not self.blobs_dir.is_dir():
            return 0
        for sub in self.blobs_dir.iterdir():
            if not sub.is_dir():
                continue
            for blob in sub.iterdir():
                try:
                    if blob.stat().st_nlink <= 1:
                        blob.unlink()
                        removed += 1
                except OSError:
                    continue
        return removed
