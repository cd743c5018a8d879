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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelforge.errors import (
    DataError,
    InvalidModelError,
    RuntimeFailure,
    StoreCorruptError,
    StoreError,
    UsageError,
)
from modelforge.model.external import ExternalFile
from modelforge.model.files import check_regular_file
from modelforge.model.open import open_model
from modelforge.store.admission import AdmissionReport, admit
from modelforge.store.columns import (
    check_columns_fit,
    column_notes,
    header_columns,
    validate_columns,
)
from modelforge.store.layout import Store, fsync_dir, link_blob, write_json_atomic
from modelforge.store.metadata import META_SCHEMA_VERSION, load_meta
from modelforge.store.names import (
    MAX_VERSION,
    check_version_number,
    validate_alias,
    validate_labels,
    validate_name,
)
from modelforge.text import escape

# (staging_dir, staged model path, column map) -> the record for meta["examples"]
ExamplesRecorder = Callable[[Path, Path, list[str] | None], dict[str, Any]]

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
    # options the call asked for that were not applied (the bytes were already stored)
    not_applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # advice, e.g. a missing column map
    renumbered_from: int | None = None  # import: the archive's version, when not kept
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
            "not_applied": self.not_applied,
            "notes": self.notes,
            "renumbered_from": self.renumbered_from,
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
    from modelforge.model.opset import opset_imports

    return {
        "ir_version": int(model.ir_version),
        "opset_imports": opset_imports(model),
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
    st: Store, source: Path, data: bytes, model: Any, externals: list[ExternalFile]
) -> _Staged:
    """Copy the model bytes and its (already checked) external-data files into a fresh
    staging directory."""
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
        link_blob(st.blob_path(f["sha256"]), staged.directory / "files" / f["path"])


def commit(
    st: Store,
    staged: _Staged,
    name: str,
    meta: dict[str, Any],
    *,
    version: int | None,
    aliases: list[str],
    prefer: int | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Publish a staged version under the lock. Returns (version, None) for a new version,
    or (version, its metadata) when the same contents were already stored.

    ``version``: exactly this number (an error if taken or retired). ``prefer``: this
    number if it is free and was never used (an import keeps the archive's number),
    else the next free one."""
    from modelforge.store.examples import content_entries

    cid = content_id([*staged.files, *content_entries(meta)])
    with st.lock():
        existing = st.versions(name)
        for v in existing:
            try:
                other = load_meta(st.version_dir(name, v) / "meta.json")
            except (StoreCorruptError, FileNotFoundError):
                continue  # a damaged version is verify's business, not a duplicate
            if other.get("content_id") == cid and version in (None, v):
                _set_aliases(st, name, v, aliases)
                return v, other
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
        elif (
            prefer is not None
            and 1 <= prefer <= MAX_VERSION
            and prefer not in existing
            and prefer not in removed
            and not st.version_dir(name, prefer).exists()
        ):
            chosen = prefer
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
    return chosen, None


def _set_aliases(st: Store, name: str, version: int, aliases: list[str]) -> None:
    if not aliases:
        return
    current = st.aliases(name)
    for a in aliases:
        current[a] = version
    write_json_atomic(st.aliases_path(name), dict(sorted(current.items())))


def not_applied(
    existing: dict[str, Any],
    *,
    description: str | None,
    labels: dict[str, str],
    columns: list[str] | None,
) -> list[str]:
    """Options asked for that differ from what the already-stored version records."""
    out = []
    if columns is not None and list(existing.get("columns") or []) != columns:
        out.append("--columns")
    if description is not None and existing.get("description") != description:
        out.append("--description")
    stored_labels = existing.get("labels") or {}
    if any(stored_labels.get(k) != v for k, v in labels.items()):
        out.append("--label")
    return out


def add_model(
    path: str | os.PathLike[str],
    name: str,
    *,
    version: int | None = None,
    aliases: list[str] | tuple[str, ...] = (),
    description: str | None = None,
    labels: dict[str, str] | None = None,
    columns: list[str] | None = None,
    columns_from: str | os.PathLike[str] | None = None,
    force: bool = False,
    store: Store | None = None,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    examples: ExamplesRecorder | None = None,
) -> AddResult:
    """Check, validate and store a model file (and its external data) as a new version.

    ``columns_from``: take ``columns`` from the header of a CSV or Parquet file.
    ``examples``: records golden examples of the staged model (``models add --example``;
    :func:`modelforge.api.add_model` passes it): called as ``examples(staging_dir,
    model_path, columns)`` after admission, it writes ``examples/golden.npz`` there and
    returns the record for ``meta["examples"]``.

    ``timeout_s`` / ``memory_mb`` limit the guarded validation (None: MODELFORGE_TIMEOUT /
    MODELFORGE_MEMORY_MB, then the defaults); hitting one is a ResourceLimitError (exit 8).
    When the same bytes are already stored under ``name``, nothing new is written: the
    aliases are applied, and options that would change metadata are listed in
    ``not_applied`` (change them with :func:`modelforge.store.edit.set_metadata`).
    """
    name = validate_name(name)
    alias_list = list(dict.fromkeys(validate_alias(a) for a in aliases))
    label_map = validate_labels(labels)
    if columns_from is not None:
        if columns is not None:
            raise UsageError(
                "--columns and --columns-from cannot be combined", code="invalid_option"
            )
        columns = header_columns(columns_from)
    cols = validate_columns(columns)
    check_version_number(version)
    st = store or Store()
    info = check_regular_file(path)
    # external data sits next to the path as given, like validate, inspect, predict and
    # onnxruntime itself resolve it (not next to a symlinked model's target)
    opened = open_model(info.path, parse=True)
    model = opened.parse()
    schema = opened.ensure_schema()
    check_columns_fit(schema, cols)
    try:
        st.init()
        st.clean_stale_staging()
        staged = stage_files(st, info.path, opened.data, model, opened.external)
    except OSError as exc:
        raise write_failed(st, exc) from None
    try:
        staged.report = admit(
            staged.directory / "files" / staged.model_file,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )
        staged.report.refuse_unless_ok(f"model '{escape(info.path)}'", force=force)
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
            "schema": schema.to_dict(),
            "tool_versions": tool_versions(),
            "forced": bool(force and not staged.report.ok),
            "validation": staged.report.data,
        }
        if examples is not None:  # golden examples, recorded in a guarded child
            from modelforge.store import examples as golden

            meta["examples"] = _record_examples(examples, staged, cols, path)
            golden.link_blob(
                st.blob_path(meta["examples"]["sha256"]), staged.directory / golden.EXAMPLES_FILE
            )
        chosen, existing = commit(st, staged, name, meta, version=version, aliases=alias_list)
    except OSError as exc:
        raise write_failed(st, exc) from None
    finally:
        shutil.rmtree(staged.directory, ignore_errors=True)
    vdir = st.version_dir(name, chosen)
    main = staged.files[0]
    skipped = (
        not_applied(existing, description=description, labels=label_map, columns=cols)
        if existing is not None
        else []
    )
    stored_cols = (existing or meta).get("columns")
    return AddResult(
        name=name,
        version=chosen,
        created=existing is None,
        path=str(vdir / "files" / staged.model_file),
        sha256=main["sha256"],
        size=sum(f["size"] for f in staged.files),
        aliases=sorted(a for a, v in st.aliases(name).items() if v == chosen),
        forced=bool((existing or meta).get("forced")),
        validation=(existing or meta).get("validation"),
        source=str(info.path),
        symlink_resolved_to=str(info.resolved) if info.is_symlink else None,
        files=[{k: f[k] for k in ("path", "sha256", "size")} for f in staged.files],
        not_applied=skipped,
        # a --columns that was not applied is reported once, by not_applied
        notes=[] if "--columns" in skipped else column_notes(schema, stored_cols),
        examples=_examples_summary(vdir),
    )


_ADD_OPTIONS = frozenset({"--columns", "--columns-from", "--example", "--example-rows"})


def _record_examples(
    examples: ExamplesRecorder, staged: _Staged, cols: list[str] | None, source: Any
) -> dict[str, Any]:
    """Run the recorder; its errors say they come from --example, and their hints name
    only options models add has (predict's --format, --map, --cast, --explain are not)."""
    try:
        return examples(staged.directory, staged.directory / "files" / staged.model_file, cols)
    except (DataError, RuntimeFailure) as err:
        hint = err.hint
        if hint and not set(re.findall(r"--[a-z][a-z-]*", hint)) <= _ADD_OPTIONS:
            hint = (
                "--example DATA is mapped as predict maps it: check the mapping with "
                f"'modelforge predict {escape(os.fspath(source))} DATA --explain', pass "
                "--columns a,b,..., or pass a file predict reads without extra options"
            )
        raise type(err)(
            f"recording golden examples (--example): {err.message}",
            hint=hint,
            code=err.code,
            details=err.details,
        ) from None


def _examples_summary(vdir: Path) -> dict[str, Any] | None:
    from modelforge.store.examples import summary

    return summary(load_meta(vdir / "meta.json"))
