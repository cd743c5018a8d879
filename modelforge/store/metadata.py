"""Per-version metadata (``meta.json``): schema version, reading with upgrade, the record type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelforge.errors import StoreCorruptError
from modelforge.store.layout import read_json
from modelforge.text import escape

META_SCHEMA_VERSION = 1
REQUIRED_KEYS = ("name", "version", "model_file", "files", "created_at")


def upgrade_meta(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring metadata written by any earlier ModelForge to the current schema (one place)."""
    version = meta.get("schema_version")
    if version == META_SCHEMA_VERSION:
        return meta
    if not isinstance(version, int) or version > META_SCHEMA_VERSION:
        raise StoreCorruptError(
            f"metadata '{escape(path)}' has schema_version {escape(version)!s}, which this "
            f"ModelForge (schema {META_SCHEMA_VERSION}) cannot read",
            hint="upgrade ModelForge, or restore the file",
        )
    return meta  # no older schema exists yet


def load_meta(path: Path) -> dict[str, Any]:
    data = read_json(path, "metadata")
    if not isinstance(data, dict):
        raise StoreCorruptError(
            f"metadata '{escape(path)}' is not a JSON object", hint="run 'modelforge models verify'"
        )
    data = upgrade_meta(data, path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise StoreCorruptError(
            f"metadata '{escape(path)}' lacks {', '.join(missing)}",
            hint="run 'modelforge models verify'; remove or restore the damaged version",
        )
    files = data.get("files")
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
        for f in files
    ):
        raise StoreCorruptError(
            f"metadata '{escape(path)}' has a malformed file list",
            hint="run 'modelforge models verify'",
        )
    model_file = data.get("model_file")
    for rel in [model_file, *(f["path"] for f in files)]:
        if not _inside_version(rel):
            raise StoreCorruptError(
                f"metadata '{escape(path)}' names the file '{escape(str(rel))[:120]}', which is "
                "not inside the version's files/ folder; it is damaged or tampered with",
                hint="remove the version with 'modelforge models rm', or restore meta.json "
                "from a backup",
            )
    return data


def _inside_version(rel: object) -> bool:
    """A stored file name: relative, no '..', no backslash or NUL (files are never read
    outside ``<version>/files``, whatever a tampered meta.json says)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    if rel.startswith(("/", "~")) or (len(rel) > 1 and rel[1] == ":"):
        return False
    return ".." not in rel.split("/")


@dataclass(frozen=True)
class ModelVersion:
    """One stored version as recorded in its meta.json, plus its live aliases."""

    name: str
    version: int
    directory: Path
    meta: dict[str, Any]
    aliases: list[str] = field(default_factory=list)

    @property
    def model_path(self) -> Path:
        return self.directory / "files" / self.meta["model_file"]

    @property
    def size(self) -> int:
        return sum(int(f.get("size", 0)) for f in self.meta["files"])

    @property
    def sha256(self) -> str:
        for f in self.meta["files"]:
            if f["path"] == self.meta["model_file"]:
                return str(f["sha256"])
        return ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def summary(self) -> dict[str, Any]:
        onnx_info = self.meta.get("onnx") or {}
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "aliases": self.aliases,
            "size": self.size,
            "sha256": self.sha256,
            "opset_imports": onnx_info.get("opset_imports", {}),
            "created_at": self.meta.get("created_at"),
            "description": self.meta.get("description"),
            "forced": bool(self.meta.get("forced")),
            "failed_checks": self.failed_checks,
        }

    @property
    def failed_checks(self) -> list[str]:
        """Checks that failed at add time (non-empty only for versions stored with --force)."""
        checks = (self.meta.get("validation") or {}).get("checks") or []
        return [
            str(c.get("name")) for c in checks if isinstance(c, dict) and c.get("status") == "fail"
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "path": str(self.model_path),
            "metadata": self.meta,
        }
