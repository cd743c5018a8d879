"""Reading the store: find versions by reference, list them. Never imports onnx."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from modelforge.errors import ModelNotFoundError, StoreCorruptError, check_type
from modelforge.store.layout import Store
from modelforge.store.metadata import ModelVersion, load_meta
from modelforge.store.names import Ref, parse_ref, validate_name
from modelforge.text import escape


def open_version(
    store: Store, name: str, version: int, aliases: dict[str, int] | None = None
) -> ModelVersion:
    directory = store.version_dir(name, version)
    meta = load_meta(directory / "meta.json")
    if meta.get("name") != name or meta.get("version") != version:
        raise StoreCorruptError(
            f"metadata of {name}:{version} says it is "
            f"{escape(meta.get('name'))}:{escape(meta.get('version'))}",
            hint="the version directory was moved or edited by hand; run 'modelforge models "
            "verify'",
        )
    alias_map = store.aliases(name) if aliases is None else aliases
    names = sorted(a for a, v in alias_map.items() if v == version)
    return ModelVersion(name=name, version=version, directory=directory, meta=meta, aliases=names)


def _close(word: str, options: list[str]) -> str:
    matches = difflib.get_close_matches(word, options, n=3, cutoff=0.5)
    return f"did you mean {', '.join(matches)}?" if matches else ""


def find(store: Store, ref: Ref | str) -> ModelVersion:
    """The version a reference names; errors list what exists and close matches."""
    if not isinstance(ref, (str, Ref)):
        check_type(ref, str, "model", "a store reference such as 'NAME' or 'NAME:VERSION'")
    r = parse_ref(ref) if isinstance(ref, str) else ref
    store.check_marker()
    versions = store.versions(r.name)
    if not versions:
        names = [n for n in store.names() if store.versions(n)]
        close = _close(r.name, names)
        raise ModelNotFoundError(
            f"no model named '{r.name}' in the store at '{escape(store.root)}'",
            hint=(close + " " if close else "")
            + "list models with 'modelforge models list', or pass a path to an .onnx file",
        )
    aliases = store.aliases(r.name)
    if r.selector is None:
        version = versions[-1]
    elif isinstance(r.selector, int):
        if r.selector not in versions:
            removed = r.selector in store.removed_versions(r.name)
            why = " (it was removed with 'models rm'; numbers are never reused)"
            raise ModelNotFoundError(
                f"model '{r.name}' has no version {r.selector}" + (why if removed else ""),
                hint="versions: " + ", ".join(map(str, versions)),
                code="version_not_found",
            )
        version = r.selector
    else:
        if r.selector not in aliases:
            close = _close(r.selector, list(aliases))
            raise ModelNotFoundError(
                f"model '{r.name}' has no alias '{r.selector}'",
                hint=(close + " " if close else "")
                + (
                    "aliases: " + ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items()))
                    if aliases
                    else "it has no aliases; add one with 'modelforge models tag'"
                ),
                code="alias_not_found",
            )
        version = aliases[r.selector]
        if version not in versions:
            raise StoreCorruptError(
                f"alias {r.name}:{r.selector} points at version {version}, which is missing",
                hint=f"re-tag it: modelforge models tag {r.name}:N {r.selector}",
            )
    return open_version(store, r.name, version, aliases)


@dataclass(frozen=True)
class ModelList:
    store: str
    models: list[ModelVersion]
    problems: list[str]
    name: str | None = None  # the name asked for (models list NAME), if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "models": [m.summary() for m in self.models],
            "problems": self.problems,
        }


def _entered(m: ModelVersion) -> tuple[str, str, int]:
    """When a version entered this store: ``imported_at`` for an imported one (its
    ``created_at`` is the original's), else ``created_at``."""
    meta = m.meta
    return (str(meta.get("imported_at") or meta.get("created_at", "")), m.name, m.version)


def list_models(store: Store | None = None, name: str | None = None) -> ModelList:
    """Every complete version, newest in this store first (an imported version by when it
    was imported). Unreadable versions are listed as problems."""
    if store is not None and not isinstance(store, Store):
        check_type(store, Store, "store", "a Store (to list one model, pass name='NAME')")
    if name is not None:
        check_type(name, str, "name", "a model name")
    st = store or Store()
    out: list[ModelVersion] = []
    problems: list[str] = []
    names = [validate_name(name)] if name else st.names()
    for n in names:
        try:
            aliases = st.aliases(n)
        except StoreCorruptError as exc:
            problems.append(exc.message)
            aliases = {}
        for v in st.versions(n):
            try:
                out.append(open_version(st, n, v, aliases))
            except StoreCorruptError as exc:
                problems.append(exc.message)
    out.sort(key=_entered, reverse=True)
    return ModelList(store=str(st.root), models=out, problems=problems,
                     name=validate_name(name) if name else None)  # fmt: skip
