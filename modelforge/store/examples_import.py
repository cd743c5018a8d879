"""Golden examples in an imported archive (``models import``): the archive is untrusted, so
the record is checked field by field and rebuilt from what this ModelForge writes, and the
file's size and sha256 are checked against it before the version is committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelforge.errors import DataError, InvalidModelError, StoreCorruptError
from modelforge.store.examples import EXAMPLES_FILE, check_file, load, max_bytes


def _record_ok(rec: Any) -> bool:
    def specs(items: Any, outputs: bool) -> bool:
        return isinstance(items, list) and all(
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and isinstance(s.get("key"), str)
            and (not outputs or s.get("keys_key") is None or isinstance(s["keys_key"], str))
            for s in items
        )

    return (
        isinstance(rec, dict)
        and rec.get("file") == EXAMPLES_FILE
        and isinstance(rec.get("sha256"), str)
        and isinstance(rec.get("size"), int)
        and isinstance(rec.get("rows"), int)
        and specs(rec.get("inputs"), False)
        and specs(rec.get("outputs"), True)
    )


def from_archive(meta: dict[str, Any], stage: Path) -> dict[str, Any] | None:
    """Check an imported version's examples (the archive is untrusted): a well-formed
    record, the staged file's size and sha256, plain arrays only. Returns the record."""
    rec = meta.get("examples")
    path = stage / EXAMPLES_FILE
    if rec is None:
        if path.exists():
            raise InvalidModelError(
                "the archive holds golden examples its manifest does not describe",
                hint="export the model again with 'modelforge models export'",
                code="bad_archive",
            )
        return None
    if not _record_ok(rec):
        raise InvalidModelError(
            "the archive's manifest has a malformed 'examples' field",
            hint="export the model again with 'modelforge models export'",
            code="bad_archive",
        )
    problem = check_file(path, rec)
    if problem is not None:
        raise StoreCorruptError(
            f"the archive's golden examples fail their check: {problem}",
            hint="the archive is corrupt; export it again",
            code="archive_mismatch",
        )
    if rec["size"] > 4 * max_bytes():
        raise DataError("the archive's golden examples are too large", code="examples_too_large")
    try:
        load(path, rec, "the archive")
    except StoreCorruptError as err:
        raise StoreCorruptError(err.message, hint=err.hint, code="archive_mismatch") from None
    except DataError as err:  # e.g. object arrays (never unpickled): name the member, not the stage
        reason = err.message.replace(str(path), EXAMPLES_FILE)
        raise StoreCorruptError(
            f"the archive's golden examples ({EXAMPLES_FILE}) cannot be used: {reason}",
            hint="the archive is not one ModelForge wrote; export the model again with "
            "'modelforge models export'",
            code="archive_mismatch",
        ) from None
    return _clean(rec)


def _text(value: Any, limit: int = 4096) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _clean(rec: dict[str, Any]) -> dict[str, Any]:
    """Only the fields this module writes, of the types it writes (archives are untrusted)."""

    def spec(s: dict[str, Any]) -> dict[str, Any]:
        shape = s.get("shape")
        out = {
            "name": str(s["name"])[:4096],
            "key": str(s["key"])[:64],
            "dtype": _text(s.get("dtype"), 64),
            "shape": [d for d in shape if isinstance(d, int)] if isinstance(shape, list) else None,
        }
        if s.get("keys_key") is not None:
            out["keys_key"] = str(s["keys_key"])[:64]
        return out

    sources = rec.get("sources")
    return {
        "file": EXAMPLES_FILE,
        "sha256": str(rec["sha256"]),
        "size": int(rec["size"]),
        "created_at": _text(rec.get("created_at"), 64),
        "rows": int(rec["rows"]),
        "sources": [str(x)[:4096] for x in sources if isinstance(x, str)][:64]
        if isinstance(sources, list)
        else [],
        "onnxruntime": _text(rec.get("onnxruntime"), 64),
        "provider": _text(rec.get("provider"), 128),
        "inputs": [spec(x) for x in rec["inputs"]],
        "outputs": [spec(x) for x in rec["outputs"]],
    }
