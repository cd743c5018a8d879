"""The output directory of a partitioned run: attempts, atomic commits, manifest, resume.

Layout while running::

    OUT/part-000000.parquet           committed parts (the rename is the commit)
    OUT/_temporary/manifest.json      the plan and the parts committed so far (partial)
    OUT/_temporary/part-000003.<attempt>.parquet   parts being written
    OUT/_temporary/.lock              held by the running client

and at the end ``OUT/_SUCCESS`` (the manifest: plan hash, model digest, ordered parts,
total rows), written atomically after every part; then ``_temporary/`` is removed. A part
is written to its attempt file and ``os.replace``d onto ``part-NNNNNN.parquet``: readers
never see a partial part, and a rerun writes the same bytes under the same name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelforge.cluster.plan import Plan, part_name, what_changed
from modelforge.errors import OutputError, UsageError
from modelforge.log import warn
from modelforge.text import safe

SUCCESS = "_SUCCESS"
TEMPORARY = "_temporary"
MANIFEST_VERSION = 1
MANIFEST_KIND = "modelforge.partitioned_predict"
MANIFEST_EVERY_S = 1.0  # the partial manifest is rewritten at most this often


def write_json_atomic(path: Path, payload: dict[str, Any], *, sync: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise OutputError(
            f"'{safe(path)}' is not a readable ModelForge manifest: {safe(str(exc), 100)}",
            hint="remove the output folder, or pick another one",
            code="manifest_unreadable",
        ) from None
    return data if isinstance(data, dict) else None


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (a committed part: recorded in the manifest, checked by
    ``--resume`` so that a part damaged in place is rerun, not kept)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def committed_rows(path: Path) -> int | None:
    """Rows of a committed part, from its footer; None when absent or unreadable."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # missing, truncated or not Parquet: not a committed part
        return None


@dataclass
class OutputDir:
    root: Path
    plan: Plan
    model: dict[str, Any]
    committed: dict[int, dict[str, Any]]  # part index -> bytes, sha256: kept from before
    _lock: Any = None
    _preexisting: frozenset[str] = frozenset()
    _done: dict[int, dict[str, Any]] | None = None
    _written: float = 0.0

    @property
    def temporary(self) -> Path:
        return self.root / TEMPORARY

    def attempt_path(self, index: int, attempt: str) -> str:
        return str(self.temporary / f"{part_name(index)[:-8]}.{attempt}.parquet")

    def final_path(self, index: int) -> str:
        return str(self.root / part_name(index))

    def manifest(self, parts: dict[int, dict[str, Any]]) -> dict[str, Any]:
        ordered = [parts[i] for i in sorted(parts)]
        return {
            "schema_version": MANIFEST_VERSION,
            "kind": MANIFEST_KIND,
            "plan_hash": self.plan.plan_hash,
            "model": self.model,
            "identity": self.plan.identity,
            "parts": ordered,
            "parts_planned": len(self.plan.parts),
            "total_rows": sum(p["rows"] for p in ordered),
        }

    def record(self, index: int, nbytes: int, run: dict[str, Any] | None = None) -> None:
        """A part was committed: add it to the partial manifest. ``run``: its ``sha256``
        (checked by ``--resume``) and how it ran (``seconds``, worker ``pid``)."""
        assert self._done is not None
        part = self.plan.parts[index]
        self._done[index] = {"file": part.name, "rows": part.rows, "bytes": nbytes,
                             "input": part.input, "row_groups": list(part.row_groups),
                             **(run or {})}  # fmt: skip
        now = time.monotonic()
        if now - self._written >= MANIFEST_EVERY_S:  # informational: resume reads the parts
            write_json_atomic(
                self.temporary / "manifest.json", self.manifest(self._done), sync=False
            )
            self._written = now

    def attempts_left_over(self) -> dict[int, int]:
        """Attempt files of this run that never became a part (their worker died)."""
        counts: dict[int, int] = {}
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.temporary):
                if name.startswith("part-") and name not in self._preexisting:
                    with contextlib.suppress(ValueError):
                        idx = int(name[5:11])
                        counts[idx] = counts.get(idx, 0) + 1
        return counts

    def finish(self) -> dict[str, Any]:
        """Every part is committed: write _SUCCESS last and atomically, drop _temporary/."""
        assert self._done is not None
        missing = [p.index for p in self.plan.parts if p.index not in self._done]
        if missing:
            raise OutputError(
                f"parts {missing[:5]} were not committed", code="parts_missing"
            )  # a bug in the executor if it happens
        manifest = self.manifest(self._done)
        manifest["completed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json_atomic(self.root / SUCCESS, manifest)
        self.release()
        shutil.rmtree(self.temporary, ignore_errors=True)
        return manifest

    def flush(self) -> None:
        """Bring the partial manifest up to date (a run that stops before finishing)."""
        if self._done is not None and (self.temporary / "manifest.json").exists():
            write_json_atomic(self.temporary / "manifest.json", self.manifest(self._done))

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _refuse(message: str, hint: str, code: str) -> OutputError:
    return OutputError(message, hint=hint, code=code)


def prepare(root: str, plan: Plan, model: dict[str, Any], resume: bool) -> OutputDir:
    """Create or reopen ``root``; with ``resume``, keep the parts an identical plan committed.

    Refuses (before any work): a folder holding other files, an earlier run without
    ``resume``, and with ``resume`` a run whose plan differs (saying what changed)."""
    from filelock import FileLock, Timeout

    out = Path(os.path.abspath(root))  # workers may run elsewhere: never a relative path
    try:
        made = _check_target(out, root)
    except OSError as exc:  # a name too long, a loop of links, ...
        raise _refuse(f"cannot use '{safe(root)}' as the output folder: {safe(exc.strerror)}",
                      "name another folder", "output_unwritable") from None  # fmt: skip
    try:
        out.mkdir(exist_ok=True)
        (out / TEMPORARY).mkdir(exist_ok=True)
    except OSError as exc:
        _undo(made)
        raise _refuse(f"cannot write to '{safe(root)}': {safe(exc.strerror)}",
                      "check permissions", "output_unwritable") from None  # fmt: skip
    lock = FileLock(str(out / TEMPORARY / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise _refuse(
            f"another run is writing '{safe(root)}'",
            "wait for it to finish, or pick another folder",
            "output_locked",
        ) from None
    try:
        committed = _existing(out, plan, resume)
    except BaseException:
        lock.release()
        _undo(made)  # a refused folder is left as it was found (no _temporary/ in it)
        raise
    pre = frozenset(os.listdir(out / TEMPORARY))
    od = OutputDir(out, plan, model, committed, lock, pre, {})
    assert od._done is not None
    for idx, kept in committed.items():
        part = plan.parts[idx]
        od._done[idx] = {"file": part.name, "rows": part.rows, **kept,
                         "input": part.input, "row_groups": list(part.row_groups)}  # fmt: skip
    if len(committed) < len(plan.parts):  # parts to (re)run: the folder is not complete now
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out / SUCCESS)
    write_json_atomic(out / TEMPORARY / "manifest.json", od.manifest(od._done))
    return od


def _check_target(out: Path, root: str) -> list[Path]:
    """Refuse a file or a dangling link in the way and a missing parent; return the
    folders this run will create (removed again if it is refused)."""
    if out.is_symlink() and not out.exists():
        raise _refuse(f"output '{safe(root)}' is a link to '{safe(os.readlink(out))}', which "
                      "does not exist", "create the folder it points to, or name another "
                      "folder", "output_folder_missing")  # fmt: skip
    if out.exists() and not out.is_dir():
        raise _refuse(f"output '{safe(root)}' is an existing file, not a folder",
                      "remove it, or name a new folder for the parts (e.g. -o scores/)",
                      "output_not_directory")  # fmt: skip
    if not out.parent.is_dir():
        raise _refuse(f"output folder '{safe(out.parent)}' does not exist", "create it first",
                      "output_folder_missing")  # fmt: skip
    work = out / TEMPORARY
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        # attempts, the lock and the manifest would land wherever it points
        raise _refuse(f"'{safe(work)}' is a {'link' if work.is_symlink() else 'file'}, not "
                      "the working folder of a run", "remove it, or pick another folder",
                      "output_not_empty")  # fmt: skip
    return [p for p in (out, out / TEMPORARY) if not p.exists()]


def _undo(made: list[Path]) -> None:
    """Remove the folders this run created (deepest first), only while they hold nothing
    but its lock file: never another client's files."""
    for path in reversed(made):
        with contextlib.suppress(OSError):
            if path.name == TEMPORARY:
                (path / ".lock").unlink(missing_ok=True)
            path.rmdir()


def _manifest(path: Path) -> dict[str, Any] | None:
    """Our manifest at ``path``, or None when absent or another tool's (Spark and Hadoop
    write an empty ``_SUCCESS``; anything without our ``kind`` is not a run of ours)."""
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:
            return None
    data = read_json(path)
    return data if data is not None and data.get("kind") == MANIFEST_KIND else None


def _existing(out: Path, plan: Plan, resume: bool) -> dict[int, dict[str, Any]]:
    source = out / SUCCESS
    previous = _manifest(source)
    if previous is None:
        source = out / TEMPORARY / "manifest.json"
        previous = _manifest(source)
    if previous is None:
        others = sorted(n for n in os.listdir(out) if n != TEMPORARY)
        if others:
            shown = ", ".join(safe(n) for n in others[:5]) + (", ..." if len(others) > 5 else "")
            raise _refuse(
                f"output folder '{safe(out)}' is not empty and holds no ModelForge run "
                f"(found: {shown})",
                "pick an empty or new folder (the parts are never mixed with other files)",
                "output_not_empty",
            )  # fmt: skip
        return {}
    if not resume:
        plan_id = str(previous.get("plan_hash"))[:12]
        raise UsageError(
            f"output folder '{safe(out)}' holds an earlier run (plan {plan_id})",
            hint="pass --resume to keep its committed parts and run the rest, or pick another "
            "folder",
            code="output_exists",
        )
    if not isinstance(previous.get("identity"), dict) or not isinstance(
        previous.get("parts", []), list
    ):
        raise _refuse(
            f"'{safe(source)}' is not a readable ModelForge manifest: its plan identity or "
            "its list of parts is missing or malformed (damaged or edited)",
            "write to a new folder (the parts in this one cannot be checked against a plan)",
            "manifest_unreadable",
        )
    if previous.get("identity") != plan.identity:
        changed = what_changed(previous.get("identity") or {}, plan.identity)
        raise UsageError(
            f"cannot resume into '{safe(out)}': {changed}",
            hint="rerun with the same model, options and inputs, or write to a new folder",
            code="resume_mismatch",
        )
    _refuse_strangers(out, plan)
    recorded = {str(p.get("file")): p.get("sha256") for p in previous.get("parts") or []
                if isinstance(p, dict)}  # fmt: skip
    complete = source.name == SUCCESS  # it recorded every part's sha256 at its commit
    committed: dict[int, dict[str, Any]] = {}
    for part in plan.parts:
        path = out / part.name
        if committed_rows(path) != part.rows:
            continue
        digest = recorded.get(part.name)
        if isinstance(digest, str):  # recorded at its commit: the bytes must still be those
            if file_sha256(path) != digest:
                warn(f"{part.name} does not match the sha256 recorded when it was committed "
                     "(damaged or replaced): running it again")  # fmt: skip
                continue
        elif complete:  # _SUCCESS lists every part with its sha256: this entry was edited
            warn(f"{SUCCESS} records no sha256 for {part.name} (damaged or edited): "
                 "running it again")  # fmt: skip
            continue
        else:  # committed after the last manifest update (the client was killed)
            digest = file_sha256(path)
        committed[part.index] = {"bytes": path.stat().st_size, "sha256": digest}
    return committed


def _refuse_strangers(out: Path, plan: Plan) -> None:
    """A folder being resumed holds this plan's parts, ``_SUCCESS`` and ``_temporary/``
    only: any other file (a ``part-000099.parquet`` beyond the plan, a copy) would be
    read with the parts by anyone globbing the folder. Hidden files (``.nfs*`` left by NFS
    for replaced files still open somewhere, ``.DS_Store``) are no such risk."""
    known = {SUCCESS, TEMPORARY, *(p.name for p in plan.parts)}
    strangers = sorted(n for n in os.listdir(out) if n not in known and not n.startswith("."))
    if strangers:
        shown = ", ".join(safe(n) for n in strangers[:5]) + (", ..." if len(strangers) > 5 else "")
        raise _refuse(
            f"output folder '{safe(out)}' holds files that are not parts of this run: {shown}",
            "move them out of the folder, then resume", "output_not_empty",
        )  # fmt: skip
