"""The one resolver: a user's MODEL argument (path or store reference) to a location."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelforge.errors import ArgumentError, InvalidNameError, NotFoundError, check_type
from modelforge.store.catalog import find
from modelforge.store.layout import Store
from modelforge.text import escape


@dataclass(frozen=True)
class ModelLocation:
    """Where a model is, and what the store recorded about it (for store references)."""

    path: Path
    ref: str
    origin: Literal["file", "store"]
    name: str | None = None
    version: int | None = None
    metadata: dict[str, Any] | None = None

    @property
    def trusted(self) -> bool:
        """Files laid out by the store (hard links to its blobs, verified by hash)."""
        return self.origin == "store"

    @property
    def columns(self) -> list[str] | None:
        cols = (self.metadata or {}).get("columns")
        return list(cols) if cols else None

    @property
    def display(self) -> str:
        return f"{self.name}:{self.version}" if self.origin == "store" else str(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "origin": self.origin,
            "path": str(self.path),
            "name": self.name,
            "version": self.version,
        }


def _looks_like_path(ref: str) -> bool:
    return (
        os.sep in ref
        or "/" in ref
        or ref.lower().endswith((".onnx", ".ort", ".pb"))
        or ref.startswith((".", "~"))
    )


def resolve_model(ref: str | os.PathLike[str], store: Store | None = None) -> ModelLocation:
    """Resolve ``ref``: an existing file path wins, then a store reference.

    A string that looks like a path (has a separator or an .onnx suffix) but does not
    exist is reported as a missing file, not looked up in the store.
    """
    check_type(
        ref, (str, os.PathLike), "model", "a path or a store reference such as 'NAME:VERSION'"
    )
    text = os.fspath(ref)
    if not isinstance(text, str):
        raise ArgumentError("model must be a text path, got bytes", hint="pass a str path")
    if not text:
        raise InvalidNameError("empty model reference", hint="pass a path or NAME[:VERSION]")
    if os.path.lexists(text):
        # a folder can never be a model: 'churn' run next to a project folder named churn/
        # means the stored model (when there is one), not "is a directory"
        if os.path.isdir(text) and not _looks_like_path(text):
            try:
                return _stored(text, store)
            except (NotFoundError, InvalidNameError):
                pass
        return ModelLocation(path=Path(text).absolute(), ref=text, origin="file")
    if _looks_like_path(text):
        raise NotFoundError(
            f"model file '{escape(text)}' does not exist",
            hint="check the path, or use a store reference such as NAME or NAME:VERSION",
            code="file_not_found",
        )
    return _stored(text, store)


def _stored(text: str, store: Store | None) -> ModelLocation:
    st = store or Store()
    mv = find(st, text)
    return ModelLocation(
        path=mv.model_path,
        ref=text,
        origin="store",
        name=mv.name,
        version=mv.version,
        metadata=mv.meta,
    )
