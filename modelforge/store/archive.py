"""Export a stored version to ``.tar.gz`` and import it back, verifying every hash.

Archive layout::

    modelforge-export.json     {"format": "modelforge-export", "schema_version": 1, "meta": {...}}
    files/<path>               every file of the version, as recorded in meta["files"]

Import refuses members that are not regular files, absolute or ``..`` paths, backslashes,
unexpected names, archives whose declared sizes exceed the limit, and files whose sha256
or size differ from the manifest. Nothing is written to the store unless all of it checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from modelforge import log
from modelforge.errors import (
    InvalidModelError,
    OutputError,
    StoreCorruptError,
    StoreError,
    UnsafeModelError,
    UsageError,
    check_type,
)
from modelforge.model.files import check_output_file, check_regular_file
from modelforge.store.catalog import find
from modelforge.store.columns import validate_columns
from modelforge.store.layout import Store
from modelforge.store.metadata import META_SCHEMA_VERSION, upgrade_meta
from modelforge.store.names import validate_alias, validate_labels, validate_name
from modelforge.text import escape, human_bytes

MANIFEST = "modelforge-export.json"
EXPORT_FORMAT = "modelforge-export"
EXPORT_SCHEMA_VERSION = 1
MAX_IMPORT_BYTES = 16 * 1024**3
MAX_MEMBERS = 10_000


@dataclass(frozen=True)
class ExportResult:
    ref: str
    output: str
    size: int
    files: int

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "output": self.output, "size": self.size, "files": self.files}


def export_version(
    ref: str, output: str | os.PathLike[str], *, store: Store | None = None
) -> ExportResult:
    check_type(ref, str, "model", "a store reference such as 'NAME:VERSION'")
    check_type(output, (str, os.PathLike), "output", "an archive path ending in .tar.gz")
    if os.fspath(output) == "-":
        raise UsageError(
            "models export cannot write the archive to stdout ('-o -')",
            hint="pass a file name, e.g. -o model.tar.gz",
            code="invalid_option",
        )
    st = store or Store()
    mv = find(st, ref)
    out = Path(output).absolute()
    if not out.parent.is_dir():
        raise OutputError(
            f"output folder '{escape(out.parent)}' does not exist",
            hint="create it first",
            code="output_folder_missing",
        )
    check_output_file(out)
    if not out.name.lower().endswith((".tar.gz", ".tgz")):
        # '-o model.onnx' used to replace the user's model with an archive, silently
        raise UsageError(
            f"-o '{escape(out.name)}' does not end in .tar.gz or .tgz; models export writes a "
            "gzipped tar archive",
            hint=f"name the archive e.g. -o {escape(mv.name)}-{mv.version}.tar.gz",
            code="invalid_option",
        )
    _check_stored_files(mv)
    manifest = {
        "format": EXPORT_FORMAT,
        "schema_version": EXPORT_SCHEMA_VERSION,
        "aliases": mv.aliases,
        "meta": mv.meta,
    }
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            payload = json.dumps(manifest, indent=2, ensure_ascii=False).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(payload)
            info.mode = 0o644
            import io

            tar.addfile(info, io.BytesIO(payload))
            for f in mv.meta["files"]:
                src = mv.directory / "files" / f["path"]
                ti = tar.gettarinfo(str(src), arcname=f"files/{f['path']}")
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mode = 0o644
                with open(src, "rb") as fh:
                    tar.addfile(ti, fh)
            if mv.meta.get("examples"):  # golden examples (store/examples.py)
                from modelforge.store.examples import EXAMPLES_FILE

                ti = tar.gettarinfo(str(mv.directory / EXAMPLES_FILE), arcname=EXAMPLES_FILE)
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mode = 0o644
                with open(mv.directory / EXAMPLES_FILE, "rb") as fh:
                    tar.addfile(ti, fh)
        os.replace(tmp, out)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(
                f"cannot write '{escape(out)}': {exc.strerror or exc}",
                hint="check free disk space and permissions",
                code="write_failed",
            ) from None
        raise
    return ExportResult(
        ref=mv.ref, output=str(out), size=out.stat().st_size, files=len(mv.meta["files"])
    )


def _check_stored_files(mv: Any) -> None:
    """Refuse to export a damaged version (its archive would only fail at import)."""
    from modelforge.store.layout import hash_file

    hint = f"run 'modelforge models verify {mv.ref}' to see every damaged file"
    for f in mv.meta["files"]:
        src = mv.directory / "files" / f["path"]
        if not src.is_file():
            raise StoreCorruptError(
                f"stored file '{escape(f['path'])}' of {mv.ref} is missing; nothing exported",
                hint=hint,
                code="stored_file_missing",
            )
        if hash_file(src)[0] != f["sha256"]:
            raise StoreCorruptError(
                f"stored file '{escape(f['path'])}' of {mv.ref} does not match its recorded "
                "sha256; nothing exported",
                hint=hint,
                code="sha256_mismatch",
            )
    rec = mv.meta.get("examples")
    if isinstance(rec, dict):  # golden examples are part of the version too
        from modelforge.store.examples import EXAMPLES_FILE, check_file

        problem = check_file(mv.directory / EXAMPLES_FILE, rec)
        if problem is not None:
            raise StoreCorruptError(
                f"the golden examples of {mv.ref} ('{EXAMPLES_FILE}') are damaged: {problem}; "
                "nothing exported",
                hint=hint,
                code="stored_file_missing" if problem == "missing" else "sha256_mismatch",
            )


def _bad_manifest(field: str) -> InvalidModelError:
    return InvalidModelError(
        f"the archive's manifest has a malformed '{field}' field",
        hint="export the model again with 'modelforge models export'",
        code="bad_archive",
    )


def _text(value: Any, *, allow_none: bool = False) -> str | None:
    if value is None:
        return None if allow_none else ""
    if not isinstance(value, str):
        raise _bad_manifest("text")
    return value[:4096]


def _mapping(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad_manifest(field)
    return dict(value)


def _string_list(value: Any, field: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad_manifest(field)
    return list(value)


def _file_entry(value: Any) -> dict[str, Any]:
    """One entry of the manifest's file list: {"path": str, "sha256": str, "size": int}."""
    if not (
        isinstance(value, dict)
        and isinstance(value.get("path"), str)
        and isinstance(value.get("sha256"), str)
        and isinstance(value.get("size"), int)
    ):
        raise _bad_manifest("files")
    return value


def _checked(check: Any, value: Any) -> Any:
    """Run an add-time validator on archive data; its complaint is about the archive."""
    try:
        return check(value)
    except UsageError as exc:
        raise InvalidModelError(
            f"the archive's manifest is invalid: {exc.message}",
            hint="export the model again with 'modelforge models export'",
            code="bad_archive",
        ) from None


def _member_path(name: str) -> str:
    if "\\" in name or "\x00" in name or name.startswith("/"):
        raise UnsafeModelError(
            f"archive member '{escape(name)}' has an unsafe path",
            hint="only archives made by 'modelforge models export' are accepted",
            code="unsafe_archive",
        )
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if any(p == ".." for p in parts) or not parts:
        raise UnsafeModelError(
            f"archive member '{escape(name)}' escapes the archive root", code="unsafe_archive"
        )
    return "/".join(parts)


def _stage_write_failed(stage: Path, exc: OSError) -> StoreError:
    """Writing the extracted files failed (disk full, read-only): the archive is not to blame."""
    return StoreError(
        f"cannot write to the store's staging folder '{escape(stage.parent)}': "
        f"{exc.strerror or exc}",
        hint="free disk space or fix permissions, then retry; nothing was imported",
        code="store_write_failed",
    )


def _read_archive(path: Path, stage: Path) -> dict[str, Any]:
    """Extract into ``stage/files`` with every check; returns the manifest."""
    manifest: dict[str, Any] | None = None
    written: dict[str, tuple[str, int]] = {}
    total = 0
    try:
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidModelError(
            f"'{escape(path)}' is not a .tar.gz archive ({escape(exc)})",
            hint="pass a file made by 'modelforge models export'",
            code="bad_archive",
        ) from None
    with tar:
        try:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise UnsafeModelError(
                        f"archive '{escape(path)}' has over {MAX_MEMBERS} members",
                        code="unsafe_archive",
                    )
                name = _member_path(member.name)
                if member.isdir():
                    continue
                if not member.isreg():
                    raise UnsafeModelError(
                        f"archive member '{escape(member.name)}' is a link or special file",
                        hint="exports contain regular files only",
                        code="unsafe_archive",
                    )
                total += member.size
                if total > MAX_IMPORT_BYTES:
                    raise UnsafeModelError(
                        f"archive '{escape(path)}' declares over {human_bytes(MAX_IMPORT_BYTES)}",
                        code="archive_too_large",
                    )
                fh = tar.extractfile(member)
                if fh is None:
                    continue
                if name == MANIFEST:
                    raw = fh.read(16 * 1024 * 1024)
                    try:
                        manifest = json.loads(raw)
                    except (ValueError, RecursionError):
                        raise InvalidModelError(
                            "the archive's manifest is not valid JSON", code="bad_archive"
                        ) from None
                    continue
                golden = name == "examples/golden.npz"  # checked by store/examples.py
                if not name.startswith("files/") and not golden:
                    raise UnsafeModelError(
                        f"unexpected archive member '{escape(name)}'", code="unsafe_archive"
                    )
                rel = name[len("files/") :]
                dst = stage / name if golden else stage / "files" / rel
                h = hashlib.sha256()
                size = 0
                try:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    out = open(dst, "xb")  # noqa: SIM115 - closed by the with below
                except OSError as exc:
                    raise _stage_write_failed(stage, exc) from None
                with out:
                    while block := fh.read(1024 * 1024):
                        size += len(block)
                        if size > member.size:
                            break
                        h.update(block)
                        try:
                            out.write(block)
                        except OSError as exc:
                            raise _stage_write_failed(stage, exc) from None
                    try:
                        out.flush()
                        os.fsync(out.fileno())
                    except OSError as exc:
                        raise _stage_write_failed(stage, exc) from None
                if not golden:
                    written[rel] = (h.hexdigest(), size)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InvalidModelError(
                f"archive '{escape(path)}' is truncated or corrupt ({escape(exc)})",
                code="bad_archive",
            ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise InvalidModelError(
            f"'{escape(path)}' has no ModelForge export manifest",
            hint="pass a file made by 'modelforge models export'",
            code="bad_archive",
        )
    version = manifest.get("schema_version")
    if type(version) is not int or not 1 <= version <= EXPORT_SCHEMA_VERSION:
        raise InvalidModelError(
            f"'{escape(path)}' is an export of schema_version {escape(str(version)[:40])}, "
            f"which this ModelForge (export schema {EXPORT_SCHEMA_VERSION}) cannot read",
            hint="import it with the ModelForge that exported it, or a newer one",
            code="bad_archive",
        )
    meta = manifest.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), list):
        raise InvalidModelError("the archive's manifest has no file list", code="bad_archive")
    expected = {f["path"]: (f["sha256"], f["size"]) for f in map(_file_entry, meta["files"])}
    if set(expected) != set(written):
        missing = sorted(set(expected) - set(written))
        extra = sorted(set(written) - set(expected))
        raise StoreCorruptError(
            f"archive files do not match its manifest (missing: {', '.join(missing) or '-'}; "
            f"unexpected: {', '.join(map(escape, extra)) or '-'})",
            code="archive_mismatch",
        )
    for rel, (digest, size) in written.items():
        if (digest, size) != tuple(expected[rel]):
            raise StoreCorruptError(
                f"archive file '{escape(rel)}' fails its sha256/size check",
                hint="the archive is corrupt; export it again",
                code="archive_mismatch",
            )
    return manifest


def import_archive(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    version: int | None = None,
    force: bool = False,
    store: Store | None = None,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
) -> Any:
    """Import an export archive as a new version (validated again: archives are untrusted)."""
    check_type(path, (str, os.PathLike), "path", "the path of a .tar.gz export archive")
    from modelforge.model.open import open_model
    from modelforge.store.add import (
        AddResult,
        _Staged,
        commit,
        onnx_summary,
        tool_versions,
    )
    from modelforge.store.admission import admit
    from modelforge.store.examples import summary
    from modelforge.store.names import check_version_number

    check_version_number(version)
    info = check_regular_file(path, what="archive")
    st = store or Store()
    st.init()
    st.clean_stale_staging()
    stage = st.new_staging_dir("import")
    try:
        manifest = _read_archive(info.resolved, stage)
        meta = upgrade_meta(dict(manifest["meta"]), info.path)
        target = validate_name(name or str(meta.get("name", "")))
        raw_aliases = manifest.get("aliases", [])
        aliases = [validate_alias(a) for a in raw_aliases if isinstance(a, str)]
        model_file = str(meta.get("model_file", ""))
        model_path = stage / "files" / model_file
        opened = open_model(model_path, parse=True)  # external data checked in the stage
        model = opened.parse()
        report = admit(model_path, timeout_s=timeout_s, memory_mb=memory_mb)
        report.refuse_unless_ok("imported model", force=force)
        files = [
            {
                "path": f["path"],
                "sha256": f["sha256"],
                "size": f["size"],
                "role": "model" if f["path"] == model_file else "external_data",
            }
            for f in meta["files"]
        ]
        # Only what the archive cannot lie about is copied from it, and re-checked; the rest
        # (schema, ONNX summary, validation) is derived again from the model itself.
        meta = {
            "schema_version": META_SCHEMA_VERSION,
            "name": target,
            "version": None,
            "created_at": _text(meta.get("created_at")),
            "source_path": _text(meta.get("source_path")),
            "source_resolved": None,
            "description": _text(meta.get("description"), allow_none=True),
            "labels": _checked(validate_labels, _mapping(meta.get("labels"), "labels")),
            "columns": _checked(validate_columns, _string_list(meta.get("columns"), "columns")),
            "model_file": model_file,
            "files": files,
            "onnx": onnx_summary(model),
            "schema": opened.ensure_schema().to_dict(),
            "tool_versions": tool_versions(),
            "forced": bool(force and not report.ok),
            "validation": report.data,
            **_examples_entry(meta, stage, st),
            "imported_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "imported_from": {
                "archive": str(info.path),
                "name": _text(meta.get("name")),
                "version": meta.get("version") if type(meta.get("version")) is int else None,
            },
        }
        existing = st.aliases(target)
        kept_aliases = []
        for alias in aliases:
            if alias in existing:
                log.warn(
                    f"alias {target}:{alias} already points at version {existing[alias]}; "
                    f"not moved by the import (use 'modelforge models tag' to move it)"
                )
            else:
                kept_aliases.append(alias)
        staged = _Staged(stage, model_file, files, model, None)
        origin_version = meta["imported_from"]["version"]
        chosen, existing_meta = commit(
            st, staged, target, meta, version=version, aliases=kept_aliases,
            prefer=origin_version,
        )  # fmt: skip
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    main = next(f for f in files if f["path"] == model_file)
    return AddResult(
        name=target,
        version=chosen,
        created=existing_meta is None,
        path=str(st.version_dir(target, chosen) / "files" / model_file),
        sha256=main["sha256"],
        size=sum(int(f["size"]) for f in files),
        aliases=sorted(a for a, v in st.aliases(target).items() if v == chosen),
        forced=bool(meta["forced"]),
        validation=report.data,
        source=str(info.path),
        files=[{k: f[k] for k in ("path", "sha256", "size")} for f in files],
        renumbered_from=(
            origin_version
            if existing_meta is None and origin_version not in (None, chosen)
            else None
        ),
        examples=summary(meta),
    )


def _examples_entry(meta: dict[str, Any], stage: Path, st: Store) -> dict[str, Any]:
    """``{"examples": record}`` when the archive carries golden examples (checked)."""
    from modelforge.store.examples import EXAMPLES_FILE, link_blob
    from modelforge.store.examples_import import from_archive

    rec = from_archive(meta, stage)
    if rec is None:
        return {}
    link_blob(st.blob_path(rec["sha256"]), stage / EXAMPLES_FILE)
    return {"examples": rec}
