"""Casting date/time and duration data (numpy datetime64/timedelta64: Parquet timestamps with
or without a time zone, dates, durations; NPY/NPZ arrays) onto a numeric input.

They are not numbers, so ``safe`` and ``strict`` refuse them naming the cell, its type and
the input; ``force`` feeds the stored integer (a count of the dtype's unit since
1970-01-01 UTC, or of the unit for a duration). NaT is a missing value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelforge.data.cast import _FILL_HINT, _NAN_HINT, CastPolicy, Where, _fail
from modelforge.errors import DataError

if TYPE_CHECKING:
    import numpy as np


def temporal(
    arr: np.ndarray,
    target: np.dtype[Any],
    policy: CastPolicy,
    where: Where,
    what: str,
    allow_nan: bool,
) -> np.ndarray:
    """Dates, timestamps (with or without a time zone: UTC) and durations are not numbers:
    only ``force`` feeds their stored integer (e.g. microseconds since 1970-01-01)."""
    import numpy as np

    kind = "date/time" if arr.dtype.kind == "M" else "duration"
    unit = np.datetime_data(arr.dtype)[0]
    since = "seconds since 1970" if kind == "date/time" else "seconds"
    if policy != "force":
        raise DataError(
            f"{where(0, 0)} holds {kind} values ({arr.dtype.name}) but {what} expects "
            f"{target.name}: a {kind} is not a number",
            hint=f"convert the column to a number first (e.g. {since}), or pass "
            f"--cast force to feed its stored integer (units of {unit}"
            + (" since 1970-01-01 UTC)" if kind == "date/time" else ")"),
            code="dtype_mismatch",
        )
    missing = np.isnat(arr)
    if missing.any() and (target.kind != "f" or not allow_nan):
        hint = _NAN_HINT if target.kind == "f" else _FILL_HINT
        _fail(arr, missing, where, "missing value (NaT)", hint, "nan_value")
    out = arr.view(np.int64).astype(target)
    if target.kind == "f":
        out[missing] = np.nan
    return out
