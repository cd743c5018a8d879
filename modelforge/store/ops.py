"""Changing and checking stored versions: remove, tag, untag, verify."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from modelforge.errors import ModelNotFoundError, StoreCorruptError, UsageError, check_type
from modelforge.store.catalog import find, open_version
from modelforge.store.layout import Store, hash_file, write_json_atomic
from modelforge.store.names import is_version_text, parse_ref, validate_alias, validate_name
from modelforge.text import escape


@dataclass(frozen=True)
class RemoveResult:
    removed: list[str]
    blobs_freed: int

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "blobs_freed": self.blobs_freed}


def _remove_version_locked(st: Store, name: str, version: int) -> None:
    vdir = st.version_dir(name, version)
    trash = st.new_staging_dir("rm")
    st.mark_removed(name, version)  # first: a crash must not let the number be reused
    os.rename(vdir, trash / "v")  # the version disappears atomically
    aliases = st.aliases(name)
    kept = {a: v for a, v in aliases.items() if v != version}
    if kept != aliases:
        write_json_atomic(st.aliases_path(name), kept)
    shutil.rmtree(trash, ignore_errors=True)


def _drop_empty_name(st: Store, name: str) -> None:
    """With no versions left, drop the aliases but keep the removed-version markers."""
    if not st.versions(name):
        st.aliases_path(name).unlink(missing_ok=True)


def _all_versions_name(ref: str) -> str:
    """``--all`` takes a bare NAME: 'NAME:2 --all' removed every version, not version 2."""
    check_type(ref, str, "model", "a model name")
    name, sep, selector = ref.partition(":")
    if sep:
        raise UsageError(
            f"--all removes every version of a model, but '{escape(ref)}' names one version",
            hint=f"to remove only that one, drop --all; to remove all of them, pass just "
            f"'{escape(name)}' with --all",
            code="invalid_option",
        )
    return validate_name(name)


def remove(ref: str, *, all_versions: bool = False, store: Store | None = None) -> RemoveResult:
    """Remove one version (``NAME:V``, ``NAME:ALIAS``, ``NAME`` = latest) or every version."""
    st = store or Store()
    removed: list[str] = []
    with st.lock():
        if all_versions:
            name = _all_versions_name(ref)
            versions = st.versions(name)
            if not versions:
                raise ModelNotFoundError(
                    f"no model named '{name}' in the store",
                    hint="list models with 'modelforge models list'",
                )
            for v in versions:
                _remove_version_locked(st, name, v)
                removed.append(f"{name}:{v}")
        else:
            name, version = _target(st, ref)
            _remove_version_locked(st, name, version)
            removed.append(f"{name}:{version}")
        _drop_empty_name(st, name)
        freed = st.gc_blobs()
    return RemoveResult(removed=removed, blobs_freed=freed)


def aliases_removed_by(
    ref: str, *, all_versions: bool = False, store: Store | None = None
) -> list[str]:
    """The aliases (``name:alias``) that :func:`remove` with the same arguments would drop."""
    st = store or Store()
    if all_versions:
        name = _all_versions_name(ref)
        return [f"{name}:{a}" for a in sorted(st.aliases(name))]
    name, version = _target(st, ref)
    return [f"{name}:{a}" for a, v in sorted(st.aliases(name).items()) if v == version]


def _target(st: Store, ref: str) -> tuple[str, int]:
    """The version ``models rm REF`` removes. ``NAME:V`` whose meta.json is damaged is
    still removable (that is what the damage hints ask for); aliases and latest need it."""
    try:
        mv = find(st, ref)
    except (StoreCorruptError, ModelNotFoundError):
        r = parse_ref(ref)  # a folder without meta.json is damaged too (adds rename whole
        if isinstance(r.selector, int) and st.version_dir(r.name, r.selector).is_dir():
            return r.name, r.selector  # folders in, so it is never one in progress)
        raise
    return mv.name, mv.version


@dataclass(frozen=True)
class TagResult:
    name: str
    alias: str
    version: int | None
    previous: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "previous": self.previous,
        }


def tag(ref: str, alias: str, *, store: Store | None = None) -> TagResult:
    """Point ``NAME:ALIAS`` at the version ``ref`` names (moving it if it existed)."""
    st = store or Store()
    alias = validate_alias(alias)
    with st.lock():
        mv = find(st, ref)
        aliases = st.aliases(mv.name)
        previous = aliases.get(alias)
        aliases[alias] = mv.version
        write_json_atomic(st.aliases_path(mv.name), dict(sorted(aliases.items())))
    return TagResult(name=mv.name, alias=alias, version=mv.version, previous=previous)


def untag(name: str, alias: str, *, store: Store | None = None) -> TagResult:
    st = store or Store()
    name = validate_name(name)
    alias = validate_alias(alias)
    with st.lock():
        aliases = st.aliases(name)
        if alias not in aliases:
            raise ModelNotFoundError(
                f"model '{name}' has no alias '{alias}'",
                hint="aliases: " + (", ".join(sorted(aliases)) or "none"),
                code="alias_not_found",
            )
        previous = aliases.pop(alias)
        write_json_atomic(st.aliases_path(name), aliases)
    return TagResult(name=name, alias=alias, version=None, previous=previous)


@dataclass(frozen=True)
class VerifyResult:
    checked: list[str]
    files_checked: int
    problems: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "files_checked": self.files_checked,
            "problems": self.problems,
        }


def verify(ref: str | None = None, *, store: Store | None = None) -> VerifyResult:
    """Re-hash every file of one version (``ref``) or of the whole store."""
    st = store or Store()
    problems: list[dict[str, str]] = []
    checked: list[str] = []
    n_files = 0
    if ref is not None:
        r = parse_ref(ref)
        targets = (
            [(r.name, find(st, r).version)]
            if r.selector is not None
            else [(r.name, v) for v in st.versions(r.name)]
        )
        if not targets:
            find(st, r)  # raises model_not_found with close matches
    else:
        targets = [(n, v) for n in st.names() for v in st.versions(n)]
        for n in st.names():
            d = st.name_dir(n)
            for p in d.iterdir():
                if p.is_dir() and is_version_text(p.name) and not (p / "meta.json").is_file():
                    problems.append(
                        {
                            "ref": f"{n}:{p.name}",
                            "file": "meta.json",
                            "problem": "missing metadata (incomplete version)",
                        }
                    )
    names_seen = sorted({n for n, _ in targets})
    for n in names_seen:
        try:
            aliases = st.aliases(n)
        except StoreCorruptError as exc:
            problems.append({"ref": n, "file": "aliases.json", "problem": exc.message})
            continue
        versions = set(st.versions(n))
        for a, v in aliases.items():
            if v not in versions:
                problems.append(
                    {
                        "ref": f"{n}:{a}",
                        "file": "aliases.json",
                        "problem": f"alias points at missing version {v}",
                    }
                )
    for name, version in targets:
        ref_text = f"{name}:{version}"
        checked.append(ref_text)
        try:
            mv = open_version(st, name, version, aliases={})
        except StoreCorruptError as exc:
            problems.append({"ref": ref_text, "file": "meta.json", "problem": exc.message})
            continue
        for f in mv.meta["files"]:
            path = mv.directory / "files" / f["path"]
            n_files += 1
            if not path.is_file():
                problems.append({"ref": ref_text, "file": f["path"], "problem": "missing"})
                continue
            digest, size = hash_file(path)
            if size != f.get("size"):
                problems.append(
                    {
                        "ref": ref_text,
                        "file": f["path"],
                        "problem": f"size {size} != recorded {f.get('size')}",
                    }
                )
            elif digest != f["sha256"]:
                problems.append(
                    {"ref": ref_text, "file": f["path"], "problem": "sha256 mismatch (corrupt)"}
                )
        if mv.meta.get("examples"):  # golden examples (store/examples.py)
            from modelforge.store.examples import verify_problems

            n_files += 1
            problems.extend(verify_problems(mv.directory, mv.meta, ref_text))
    return VerifyResult(checked=checked, files_checked=n_files, problems=problems)
