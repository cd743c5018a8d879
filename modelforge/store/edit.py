"""``models set``: change a stored version's metadata (columns, description, labels).

Only ``meta.json`` changes, atomically and under the store lock; the stored files (and
so the version's hashes and content id) never do. Every change is appended to the
version's ``metadata_history``: when, which fields, and their old and new values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from modelforge.errors import UsageError
from modelforge.store.catalog import find
from modelforge.store.columns import check_columns_fit, validate_columns
from modelforge.store.layout import Store, write_json_atomic
from modelforge.store.metadata import load_meta
from modelforge.store.names import validate_labels
from modelforge.text import escape

HISTORY_KEY = "metadata_history"


@dataclass(frozen=True)
class SetResult:
    ref: str
    changed: dict[str, dict[str, Any]]  # field -> {"old": ..., "new": ...}
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "changed": self.changed, "metadata": self.metadata}


def set_metadata(
    ref: str,
    *,
    columns: list[str] | None = None,
    clear_columns: bool = False,
    description: str | None = None,
    labels: dict[str, str] | None = None,
    remove_labels: list[str] | None = None,
    store: Store | None = None,
) -> SetResult:
    """Change the metadata of the version ``ref`` names; returns what changed.

    ``columns`` replaces the column map of a single 2-D input (checked against the input's
    width), ``clear_columns`` removes it; ``labels`` are set (merged), ``remove_labels``
    removed. Asking for nothing is a usage error; asking for what is already recorded
    changes nothing and records no history.
    """
    if columns is not None and clear_columns:
        raise UsageError("--columns and --clear-columns cannot be combined", code="invalid_option")
    label_map = validate_labels(labels)
    both = sorted(set(label_map) & set(remove_labels or []))
    if both:
        raise UsageError(
            f"label '{escape(both[0])}' is both set (--label) and removed (--unset-label)",
            hint="pass one of them",
            code="invalid_option",
        )
    cols = validate_columns(columns)
    if (
        cols is None
        and not clear_columns
        and description is None
        and not label_map
        and not (remove_labels)
    ):
        raise UsageError(
            "nothing to change",
            hint="pass --columns, --clear-columns, --description, --label KEY=VALUE or "
            "--unset-label KEY",
            code="invalid_option",
        )
    st = store or Store()
    with st.lock():
        mv = find(st, ref)
        meta_path = mv.directory / "meta.json"
        meta = load_meta(meta_path)  # re-read under the lock
        changed: dict[str, dict[str, Any]] = {}
        if cols is not None or clear_columns:
            if cols is not None:
                check_columns_fit(_schema(meta), cols)
            _change(meta, changed, "columns", cols)
        if description is not None:
            _change(meta, changed, "description", description)
        if label_map or remove_labels:
            new_labels = dict(meta.get("labels") or {})
            new_labels.update(label_map)
            for key in remove_labels or []:
                new_labels.pop(key, None)
            _change(meta, changed, "labels", new_labels)
        if changed:
            history = list(meta.get(HISTORY_KEY) or [])
            history.append(
                {
                    "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "changes": changed,
                }
            )
            meta[HISTORY_KEY] = history
            write_json_atomic(meta_path, meta)
    return SetResult(ref=mv.ref, changed=changed, metadata=meta)


def _change(meta: dict[str, Any], changed: dict[str, dict[str, Any]], key: str, new: Any) -> None:
    old = meta.get(key)
    if old != new and not (old in (None, [], {}) and new in (None, [], {})):
        changed[key] = {"old": old, "new": new}
        meta[key] = new


def _schema(meta: dict[str, Any]) -> Any:
    """The recorded schema as TensorSpecs (enough for the columns check)."""
    from modelforge.model.schema import ModelSchema, TensorSpec

    def spec(d: dict[str, Any]) -> TensorSpec:
        return TensorSpec(
            name=str(d.get("name")),
            type=str(d.get("type")),
            dtype=d.get("dtype"),
            shape=d.get("shape"),
        )

    recorded = meta.get("schema") or {}
    return ModelSchema(
        inputs=[spec(d) for d in recorded.get("inputs", [])],
        outputs=[spec(d) for d in recorded.get("outputs", [])],
    )
