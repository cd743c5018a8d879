"""Row-wise comparison of one output of two runs (A = the reference, B = the candidate).

Shared by ``models diff`` and validate's ``examples`` check. Values are
:class:`~modelforge.data.writers.OutputValue` (ZipMap outputs arrive as ``[N, K]`` arrays
with their class keys). Rows are the first axis.

- floats (and complex): max absolute difference, max relative difference
  (``|a - b| / max(|a|, |b|)``, 0 where both are 0, so it stays in [0, 2]), mean absolute
  difference, and the fraction of rows with any element beyond tolerance
  (``|b - a| > atol + rtol * |a|``, numpy's ``isclose`` with A as the reference). A NaN on
  one side only is beyond tolerance; NaN on both sides is equal.
- integers, booleans and strings ("labels"): exact. ``changed_fraction`` is the fraction
  of rows whose value changed (any element); integers also report absolute differences.
- ZipMap outputs: compared per class (``classes``); classes present on one side only make
  the output differ. A ZipMap output and a plain float ``[N, K]`` tensor with K = the
  number of classes (skl2onnx's ``zipmap=False``) are compared as ZipMap outputs, the
  tensor's columns taken as the other side's classes in order.
- Worst rows: up to 5 distinct rows, the largest difference first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np

    from modelforge.data.batch import OutputValue

WORST_ROWS = 5


def kind_of(value: OutputValue) -> str:
    if value.keys is not None:
        return "zipmap"
    return "float" if value.array.dtype.kind in "fc" else "label"


def _empty(name: str, kind: str, rows: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "comparable": True,
        "reason": None,
        "rows": rows,
        "max_abs_diff": 0.0,
        "max_rel_diff": 0.0,
        "mean_abs_diff": 0.0,
        "mismatch_fraction": 0.0,
        "changed_fraction": None,
        "differs": False,
        "worst_rows": [],
    }


def _scalar(row: Any) -> Any:
    import numpy as np

    flat = np.asarray(row).reshape(-1)
    items = [v.item() if hasattr(v, "item") else v for v in flat[:8]]
    if flat.size == 1:
        return items[0]
    return items + (["..."] if flat.size > 8 else [])


def _floats(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> dict[str, Any]:
    import numpy as np

    x = a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)
    y = b.astype(np.complex128 if b.dtype.kind == "c" else np.float64)
    n = x.shape[0]
    x2, y2 = x.reshape(n, -1), y.reshape(n, -1)
    nan_x, nan_y = np.isnan(x2), np.isnan(y2)
    both = nan_x & nan_y
    one = nan_x ^ nan_y
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(nan_x | nan_y, 0.0, np.abs(x2 - y2))
        denom = np.maximum(np.abs(x2), np.abs(y2))
        rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1.0), 0.0)
        beyond = (diff > atol + rtol * np.abs(np.where(nan_x, 0.0, x2))) | one
    beyond &= ~both
    row_beyond: Any = beyond.any(axis=1)
    row_max: Any = diff.max(axis=1) if diff.size else np.zeros(n)
    row_one: Any = one.any(axis=1)
    order = [int(i) for i in np.argsort(-row_max, kind="stable") if row_max[i] > 0 or row_one[i]]
    worst = [
        {
            "row": i,
            "abs_diff": float(row_max[i]),
            "a": _scalar(a[i]),
            "b": _scalar(b[i]),
            "beyond_tolerance": bool(row_beyond[i]),
        }
        for i in order[:WORST_ROWS]
    ]
    return {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "max_rel_diff": float(rel.max()) if rel.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "mismatch_fraction": float(row_beyond.mean()) if n else 0.0,
        "nan_mismatches": int(one.sum()),
        "differs": bool(row_beyond.any()),
        "worst_rows": worst,
        "_row_beyond": row_beyond,
    }


def _labels(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    import numpy as np

    n = a.shape[0]
    numeric = a.dtype.kind in "iub" and b.dtype.kind in "iub"
    if numeric:
        x, y = a.reshape(n, -1).astype(np.float64), b.reshape(n, -1).astype(np.float64)
        changed = x != y
        diff = np.abs(x - y)
    else:
        changed = a.reshape(n, -1).astype(str) != b.reshape(n, -1).astype(str)
        diff = None
    rows_changed = changed.any(axis=1) if changed.size else np.zeros(n, dtype=bool)
    idx = [int(i) for i in np.flatnonzero(rows_changed)[:WORST_ROWS]]
    frac = float(rows_changed.mean()) if n else 0.0
    return {
        "max_abs_diff": float(diff.max()) if diff is not None and diff.size else None,
        "max_rel_diff": None,
        "mean_abs_diff": float(diff.mean()) if diff is not None and diff.size else None,
        "mismatch_fraction": frac,
        "changed_fraction": frac,
        "differs": bool(rows_changed.any()),
        "worst_rows": [{"row": i, "a": _scalar(a[i]), "b": _scalar(b[i])} for i in idx],
    }


def _zipmap(a: OutputValue, b: OutputValue, rtol: float, atol: float) -> dict[str, Any]:
    import numpy as np

    ka = [str(k) for k in a.keys or []]
    kb = [str(k) for k in b.keys or []]
    common = [k for k in ka if k in kb]
    n = a.array.shape[0]
    classes: dict[str, Any] = {}
    any_beyond = np.zeros(n, dtype=bool)
    for k in common:
        res = _floats(a.array[:, ka.index(k)], b.array[:, kb.index(k)], rtol, atol)
        any_beyond |= res.pop("_row_beyond")
        classes[k] = res
    vals = list(classes.values())
    added = [k for k in kb if k not in ka]
    removed = [k for k in ka if k not in kb]
    ranked = sorted(
        ({**w, "class": k} for k, r in classes.items() for w in r["worst_rows"]),
        key=lambda w: -w["abs_diff"],
    )
    by_row: dict[int, dict[str, Any]] = {}
    for w in ranked:  # one entry per row: its class with the largest difference
        by_row.setdefault(w["row"], w)
    worst = list(by_row.values())[:WORST_ROWS]
    return {
        "max_abs_diff": max((v["max_abs_diff"] for v in vals), default=0.0),
        "max_rel_diff": max((v["max_rel_diff"] for v in vals), default=0.0),
        "mean_abs_diff": float(np.mean([v["mean_abs_diff"] for v in vals])) if vals else 0.0,
        "mismatch_fraction": float(any_beyond.mean()) if n else 0.0,
        "differs": bool(any_beyond.any()) or bool(added or removed),
        "worst_rows": worst,
        "classes": classes,
        "classes_added": added,
        "classes_removed": removed,
    }


def _not_comparable(name: str, kind: str, rows: int, reason: str) -> dict[str, Any]:
    out = _empty(name, kind, rows)
    out.update(
        comparable=False,
        reason=reason,
        differs=True,
        max_abs_diff=None,
        max_rel_diff=None,
        mean_abs_diff=None,
        mismatch_fraction=None,
    )
    return out


def missing_output(a: OutputValue, reason: str) -> dict[str, Any]:
    """The record of an output of A that B has nothing to compare with: it differs."""
    rows = int(a.array.shape[0]) if a.array.ndim else 1
    return _not_comparable(a.name, kind_of(a), rows, reason)


def _as_zipmap(value: OutputValue, keys: list[Any] | None) -> OutputValue:
    """A float ``[N, K]`` tensor as a ZipMap output with ``keys`` (K of them), else as is."""
    arr = value.array
    if (
        keys is not None
        and value.keys is None
        and arr.dtype.kind == "f"
        and arr.ndim == 2
        and arr.shape[1] == len(keys)
    ):
        return type(value)(value.name, arr, list(keys))
    return value


def compare_output(
    name: str, a: OutputValue, b: OutputValue, *, rtol: float, atol: float
) -> dict[str, Any]:
    """The comparison record of one output (see the module docstring)."""
    a, b = _as_zipmap(a, b.keys), _as_zipmap(b, a.keys)
    ka, kb = kind_of(a), kind_of(b)
    rows = int(a.array.shape[0]) if a.array.ndim else 1
    kind = ka if ka == kb else f"{ka}/{kb}"
    if ka != kb:
        return _not_comparable(name, kind, rows, f"A gives {ka} values, B gives {kb} values")
    if ka != "zipmap" and a.array.shape != b.array.shape:
        return _not_comparable(
            name, kind, rows, f"shape {list(a.array.shape)} in A, {list(b.array.shape)} in B"
        )
    if ka == "zipmap" and a.array.shape[0] != b.array.shape[0]:
        return _not_comparable(name, kind, rows, "A and B give different numbers of rows")
    if a.array.ndim == 0:
        a = type(a)(a.name, a.array.reshape(1), a.keys)
        b = type(b)(b.name, b.array.reshape(1), b.keys)
    out = _empty(name, kind, rows)
    if ka == "float":
        res = _floats(a.array, b.array, rtol, atol)
        res.pop("_row_beyond")
        out.update(res)
    elif ka == "label":
        out.update(_labels(a.array, b.array))
    else:
        out.update(_zipmap(a, b, rtol, atol))
    return out


def describe(rec: dict[str, Any]) -> str:
    """One line for a differing output record (human output, check messages)."""
    name = safe(rec["name"], 80)
    if not rec["comparable"]:
        return f"output '{name}' cannot be compared: {rec['reason']}"
    parts = []
    if rec.get("changed_fraction") is not None:
        parts.append(f"{rec['changed_fraction']:.1%} of rows changed")
    else:
        parts.append(
            f"max abs diff {rec['max_abs_diff']:.3g}, max rel diff {rec['max_rel_diff']:.3g}, "
            f"{rec['mismatch_fraction']:.1%} of rows beyond tolerance"
        )
    if rec.get("classes_added") or rec.get("classes_removed"):
        parts.append(
            f"classes added: {', '.join(map(safe, rec['classes_added'])) or '-'}; "
            f"removed: {', '.join(map(safe, rec['classes_removed'])) or '-'}"
        )
    rows = [str(w["row"]) for w in rec.get("worst_rows", [])]
    if rows:
        parts.append("worst rows: " + ", ".join(rows))
    return f"output '{name}': " + "; ".join(parts)
