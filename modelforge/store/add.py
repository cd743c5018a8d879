"""Adding a model to the store: check, stage, validate, commit atomically.

Crash safety: files are copied (verbatim, hashed while copied, fsynced) into a staging
directory under ``<root>/tmp``; the staged copy is validated; then, under the store lock,
files are linked into the content-addressed blob store, ``meta.json`` is written, and the
staging directory is renamed to ``models/<name>/<version>`` in one ``rename``. A process
killed at any point leaves either no new version or a complete one; leftovers in ``tmp``
are removed by the next writer.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelforge.errors import InvalidModelError, StoreError, UsageError
from modelforge.model.external import check_external_data
from modelforge.model.files import check_regular_file, read_capped
from modelforge.model.load import parse_model_bytes
from modelforge.store.admission import AdmissionReport, admit
from modelforge.store.layout import Store, fsync_dir, write_json_atomic
from modelforge.store.metadata import META_SCHEMA_VERSION
from modelforge.store.names import validate_alias, validate_name
from modelforge.text import escape

_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")


@dataclass(frozen=True)
class AddResult:
    name: str
    version: int
    created: bool  # False: the same bytes were already stored under this name
    path: str
    sha256: str
    size: int
    aliases: list[str]
    forced: bool
    validation: dict[str, Any] | None
    source: str
    symlink_resolved_to: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, Any] | None = None  # golden examples (store/examples.py summary)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "created": self.created,
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "aliases": self.aliases,
            "forced": self.forced,
            "source": self.source,
            "symlink_resolved_to": self.symlink_resolved_to,
            "files": self.files,
            "validation": self.validation,
            "examples": self.examples,
        }


def write_failed(st: Store, exc: OSError) -> StoreError:
    """A write into the store failed (disk full, quota, permissions): nothing was published."""
    return StoreError(
        f"cannot write to the store at '{escape(st.root)}': {exc.strerror or exc}",
        hint="free disk space or fix permissions, then retry; no partial version was stored",
        code="store_write_failed",
    )


def _validate_labels(labels: dict[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (labels or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}", key):
            raise UsageError(
                f"invalid label key '{escape(key)}'",
                hint="label keys are 1-64 letters, digits, '.', '_', '/', '-'",
                code="invalid_label",
            )
        if len(value) > 1024:
            raise UsageError(f"label '{key}' is longer than 1024 characters", code="invalid_label")
        out[key] = value
    return out


def _validate_columns(columns: list[str] | None) -> list[str] | None:
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


def _copy_hashed(src: Path, dst: Path, expect_size: int | None = None) -> tuple[str, int]:
    """Copy bytes verbatim, hashing as we go, and fsync; refuses non-regular files."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(src, flags)
    h = hashlib.sha256()
    size = 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidModelError(
                f"'{escape(src)}' is not a regular file", code="not_a_regular_file"
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "xb") as out:
            while True:
                block = os.read(fd, 1024 * 1024)
                if not block:
                    break
                h.update(block)
                out.write(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.close(fd)
    if expect_size is not None and size != expect_size:
        raise InvalidModelError(
            f"'{escape(src)}' changed size while it was copied",
            hint="retry when nothing is writing the file",
            code="file_changed",
        )
    return h.hexdigest(), size


def _write_hashed(data: bytes, dst: Path) -> tuple[str, int]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return hashlib.sha256(data).hexdigest(), len(data)


def content_id(files: list[dict[str, Any]]) -> str:
    lines = sorted(f"{f['path']}\0{f['sha256']}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def onnx_summary(model: Any) -> dict[str, Any]:
    opsets: dict[str, int] = {}
    for op in model.opset_import:
        opsets[op.domain or "ai.onnx"] = int(op.version)
    return {
        "ir_version": int(model.ir_version),
        "opset_imports": opsets,
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "domain": model.domain,
        "model_version": int(model.model_version),
        "graph_name": model.graph.name,
        "doc_string": model.doc_string,
        "metadata_props": {p.key: p.value for p in model.metadata_props},
    }


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from modelforge import __version__

    out = {"modelforge": __version__}
    for dist in ("onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _stored_name(path: Path, externals: set[str]) -> str:
    name = path.name
    if not _SAFE_FILE.match(name) or name in externals:
        name = "model.onnx"
    if name in externals:
        name = "model-main.onnx"
    return name


@dataclass
class _Staged:
    directory: Path
    model_file: str
    files: list[dict[str, Any]]
    model: Any
    report: AdmissionReport | None


def stage_files(
    st: Store, source: Path, data: bytes, model: Any, base_dir: Path, *, trusted: bool = False
) -> _Staged:
    """Copy the model bytes and its external-data files into a fresh staging directory."""
    externals = check_external_data(model, base_dir, allow_hardlinks=trusted)
    model_file = _stored_name(source, {e.location for e in externals})
    stage = st.new_staging_dir("add")
    try:
        files_dir = stage / "files"
        digest, size = _write_hashed(data, files_dir / model_file)
        files = [{"path": model_file, "sha256": digest, "size": size, "role": "model"}]
        for ext in externals:
            digest, size = _copy_hashed(ext.path, files_dir / ext.location, ext.size)
            files.append(
                {"path": ext.location, "sha256": digest, "size": size, "role": "external_data"}
            )
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return _Staged(stage, model_file, files, model, None)


def _link_into_blobs(st: Store, staged: _Staged) -> None:
    """Replace staged files by hard links to (possibly existing) blobs. Under the lock."""
    for f in staged.files:
        staged_path = staged.directory / "files" / f["path"]
        blob = st.blob_path(f["sha256"])
        blob.parent.mkdir(parents=True, exist_ok=True)
        try:
            if blob.exists():
                tmp = staged_path.with_name(staged_path.name + ".lnk")
                os.link(blob, tmp)
                os.replace(tmp, staged_path)
            else:
                os.link(staged_path, blob)
                fsync_dir(blob.parent)
            os.chmod(blob, 0o444)
        except OSError:
            # Filesystems without hard links: keep the staged copy (no de-duplication).
            continue


def commit(
    st: Store,
    staged: _Staged,
    name: str,
    meta: dict[str, Any],
    *,
    version: int | None,
    aliases: list[str],
) -> tuple[int, bool]:
    """Publish a staged version under the lock. Returns (version, created)."""
    from modelforge.store.examples import content_entries

    cid = content_id([*staged.files, *content_entries(meta)])
    with st.lock():
        existing = st.versions(name)
        for v in existing:
            from modelforge.store.metadata import load_meta

            try:
                other = load_meta(st.version_dir(name, v) / "meta.json")
            except Exception:  # corrupt versions are verify's business, not a duplicate
                continue
            if other.get("content_id") == cid and version in (None, v):
                _set_aliases(st, name, v, aliases)
                return v, False
        removed = st.removed_versions(name)
        if version is not None:
            if version in removed:
                raise StoreError(
                    f"{name}:{version} was removed; its number is not given out again",
                    hint="references pinned to it would silently get another model; omit "
                    "--version to get the next free number",
                    code="version_retired",
                )
            if version in existing or st.version_dir(name, version).exists():
                raise StoreError(
                    f"{name}:{version} already exists with different contents",
                    hint="omit --version to get the next free number, or remove the old one "
                    f"with 'modelforge models rm {name}:{version}'",
                    code="version_exists",
                )
            chosen = version
        else:
            chosen = max([0, *existing, *removed]) + 1
            while st.version_dir(name, chosen).exists():  # a damaged dir without meta.json
                chosen += 1
        meta["version"] = chosen
        meta["content_id"] = cid
        _link_into_blobs(st, staged)
        write_json_atomic(staged.directory / "meta.json", meta)
        fsync_dir(staged.directory / "files")
        fsync_dir(staged.directory)
        st.name_dir(name).mkdir(parents=True, exist_ok=True)
        os.rename(staged.directory, st.version_dir(name, chosen))
        fsync_dir(st.name_dir(name))
        _set_aliases(st, name, chosen, aliases)
    return chosen, True


def _set_aliases(st: Store, name: str, version: int, aliases: list[str]) -> None:
    if not aliases:
        return
    current = st.aliases(name)
    for a in aliases:
        current[a] = version
    write_json_atomic(st.aliases_path(name), dict(sorted(current.items())))


def add_model(
    path: str | os.PathLike[str],
    name: str,
    *,
    version: int | None = None,
    aliases: list[str] | tuple[str, ...] = (),
    description: str | None = None,
    labels: dict[str, str] | None = None,
    columns: list[str] | None = None,
    force: bool = False,
    store: Store | None = None,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    example: str | os.PathLike[str] | list[str] | None = None,
    example_rows: int = 256,
) -> AddResult:
    """Check, validate and store a model file (and its external data) as a new version.

    ``example``: a data file (any format predict reads); its first ``example_rows`` rows
    are mapped as predict maps them, run, and stored as golden examples (store/examples.py).

    ``timeout_s`` / ``memory_mb`` limit the guarded validation (None: MODELFORGE_TIMEOUT /
    MODELFORGE_MEMORY_MB, then the defaults); hitting one is a ResourceLimitError (exit 8).
    """
    name = validate_name(name)
    alias_list = list(dict.fromkeys(validate_alias(a) for a in aliases))
    label_map = _validate_labels(labels)
    cols = _validate_columns(columns)
    if version is not None and version < 1:
        raise UsageError("--version must be 1 or more", code="invalid_version")
    if example is not None:
        from modelforge.store.examples import check_rows

        check_rows(example_rows)
    st = store or Store()
    info = check_regular_file(path)
    data = read_capped(info.resolved)
    model = parse_model_bytes(data, str(info.path))
    try:
        st.init()
        st.clean_stale_staging()
        # external data sits next to the path as given, like validate, inspect, predict and
        # onnxruntime itself resolve it (not next to a symlinked model's target)
        staged = stage_files(st, info.path, data, model, info.path.parent)
    except OSError as exc:
        raise write_failed(st, exc) from None
    try:
        staged.report = admit(
            staged.directory / "files" / staged.model_file,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )
        staged.report.refuse_unless_ok(f"model '{escape(info.path)}'", force=force)
        from modelforge.model.schema import extract_schema

        meta: dict[str, Any] = {
            "schema_version": META_SCHEMA_VERSION,
            "name": name,
            "version": None,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "source_path": str(info.path),
            "source_resolved": str(info.resolved) if info.is_symlink else None,
            "description": description,
            "labels": label_map,
            "columns": cols,
            "model_file": staged.model_file,
            "files": staged.files,
            "onnx": onnx_summary(model),
            "schema": extract_schema(model).to_dict(),
            "tool_versions": tool_versions(),
            "forced": bool(force and not staged.report.ok),
            "validation": staged.report.data,
        }
        if example is not None:  # golden examples, recorded in a guarded child
            from modelforge.store import examples as golden

            meta["examples"] = golden.stage_examples(
                staged.directory,
                staged.directory / "files" / staged.model_file,
                example,
                rows=example_rows,
                columns=cols,
                timeout_s=timeout_s,
                memory_mb=memory_mb,
            )
            golden.link_blob(
                st.blob_path(meta["examples"]["sha256"]), staged.directory / golden.EXAMPLES_FILE
            )
        chosen, created = commit(st, staged, name, meta, version=version, aliases=alias_list)
    except OSError as exc:
        raise write_failed(st, exc) from None
    finally:
        shutil.rmtree(staged.directory, ignore_errors=True)
    vdir = st.version_dir(name, chosen)
    main = staged.files[0]
    return AddResult(
        name=name,
        version=chosen,
        created=created,
        path=str(vdir / "files" / staged.model_file),
        sha256=main["sha256"],
        size=sum(f["size"] for f in staged.files),
        aliases=sorted(a for a, v in st.aliases(name).items() if v == chosen),
        forced=bool(force and not staged.report.ok),
        validation=staged.report.data,
        source=str(info.path),
        symlink_resolved_to=str(info.resolved) if info.is_symlink else None,
        files=[{k: f[k] for k in ("path", "sha256", "size")} for f in staged.files],
        examples=_examples_summary(st.version_dir(name, chosen)),
    )


def _examples_summary(vdir: Path) -> dict[str, Any] | None:
    from modelforge.store.examples import summary
    from modelforge.store.metadata import load_meta

    return summary(load_meta(vdir / "meta.json"))
