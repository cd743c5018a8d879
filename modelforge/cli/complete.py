"""Shell completion of MODEL arguments: store names, ``name:VERSION`` and ``name:ALIAS``.

Runs on every Tab press, so it only lists directories and reads ``aliases.json`` of one
model: no store lock, no metadata parsing, no heavy imports. MODEL may be a path: when no
reference matches, bash falls back to its own file completion (``complete -o default``).
Enable it with ``modelforge --install-completion``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _store_root(ctx: Any) -> Path | None:
    # During completion the root callback does not run: read --store from the parsed params.
    node = ctx
    while node is not None:
        store = (node.params or {}).get("store") if hasattr(node, "params") else None
        if store:
            return Path(store).expanduser()
        node = node.parent
    try:
        from modelforge import paths

        return paths.store_root()
    except Exception:  # completion must never fail loudly
        return None


def _names(models: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(models) if e.is_dir() and e.name[:1] != ".")
    except OSError:
        return []


def _refs(folder: Path, name: str) -> list[str]:
    versions: list[str] = []
    try:
        for e in os.scandir(folder):
            if e.name.isdigit() and os.path.exists(os.path.join(e.path, "meta.json")):
                versions.append(e.name)
    except OSError:
        return []
    aliases: list[str] = []
    try:
        with open(folder / "aliases.json", encoding="utf-8") as fh:
            data = json.load(fh)
        if isinstance(data, dict):
            aliases = sorted(str(k) for k in data if isinstance(k, str))
    except (OSError, ValueError):
        pass
    ordered = sorted(versions, key=int) + (["latest"] if versions else []) + aliases
    return [f"{name}:{ref}" for ref in ordered]


def model_candidates(root: Path, incomplete: str) -> list[str]:
    """Store references starting with ``incomplete``."""
    models = root / "models"
    if ":" in incomplete:
        name = incomplete.partition(":")[0]
        if not name or "/" in name or name.startswith("."):
            return []
        refs = _refs(models / name, name)
    else:
        refs = _names(models)
    return [r for r in refs if r.startswith(incomplete)]


def complete_model(ctx: Any, incomplete: str) -> list[str]:
    """Typer ``autocompletion`` callback for MODEL: store references starting with
    ``incomplete``. When none match (a path is being typed), the shell completes files."""
    root = _store_root(ctx)
    return model_candidates(root, incomplete) if root is not None else []
