"""Casting data onto a model input's dtype: the safe / strict / force policy and NaN policy.

* ``safe`` (default): lossless casts only. int -> float when the integer is exactly
  representable (|v| <= 2**24 for float32, 2**53 for float64); float64 -> float32 when the
  value is within float32's range; float -> int when the value is integral and in range;
  bool <-> int (0/1 only); int -> string. Anything lossy is refused naming row and column.
* ``strict``: the dtype must already match (text cells must be literals of the input's kind:
  an integer input refuses "2.0").
* ``force``: numpy-style casts (float -> int truncates).

In every policy a value outside the target float range is an error (never a silent inf),
and complex data never feeds a real input unless ``force``.

Missing values, one rule for every format: a missing value is an empty CSV/TSV cell, a
null (Parquet, JSON Lines, DataFrames, ``None`` in arrays) or NaN; for numeric and bool
inputs the text spellings ``NA``, ``N/A``, ``null``, ``None``, ``nil``, ``?`` too. Without
``allow_nan`` any missing (or infinite) value is refused naming the cell. With it, float
inputs get NaN and string inputs get ""; integer and bool inputs have no missing value, so
they are still refused (the hint says to fill the values, not to pass --allow-nan).

:func:`cast_column` is the one entry point (text Series from CSV or typed arrays).

``where(row, col)`` turns an index inside the batch into "row 12, column 'b'" for messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from modelforge.errors import DataError, UsageError
from modelforge.text import escape, safe

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

CastPolicy = Literal["safe", "strict", "force"]
POLICIES: tuple[str, ...] = ("safe", "strict", "force")
Where = Callable[[int, int], str]

_NAN_HINT = "clean the data, or pass --allow-nan to pass NaN/empty cells to the model"
_FILL_HINT = "fill the missing values (integer and bool inputs cannot hold NaN)"
# spellings of "missing" in exported data: treated like an empty cell (NaN policy applies)
NA_TEXT = frozenset({"na", "n/a", "#n/a", "null", "none", "nil", "?"})
_INF_TEXT = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


def check_policy(policy: str) -> CastPolicy:
    if policy not in POLICIES:
        raise UsageError(
            f"unknown cast policy '{escape(policy)}'",
            hint="use --cast safe, strict or force",
            code="invalid_option",
        )
    return policy  # type: ignore[return-value]


def _first(mask: Any) -> int:
    import numpy as np

    return int(np.flatnonzero(mask)[0])


def _cell(arr: Any, flat: int) -> tuple[int, int]:
    """(row, column) of a flat index into a batch array (columns flattened row-major)."""
    if arr.ndim <= 1:
        return flat, 0
    per_row = int(arr.size // max(arr.shape[0], 1)) or 1
    return flat // per_row, flat % per_row


def _fail(arr: Any, mask: Any, where: Where, problem: str, hint: str, code: str) -> None:
    flat = _first(mask.reshape(-1))
    row, col = _cell(arr, flat)
    value = arr.reshape(-1)[flat]
    raise DataError(
        f"{problem} at {where(row, col)} (value {safe(value, 60)})", hint=hint, code=code
    )


def _mantissa_bound(target: np.dtype[Any]) -> int:
    return {2: 2**11, 4: 2**24, 8: 2**53}.get(target.itemsize, 2**53)


def check_finite(arr: np.ndarray, where: Where, allow_nan: bool) -> None:
    import numpy as np

    if allow_nan or arr.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        _fail(arr, bad, where, "missing or non-finite value (NaN/inf)", _NAN_HINT, "nan_value")


def cast_column(
    values: Any,
    dtype: str,
    *,
    policy: CastPolicy,
    allow_nan: bool,
    where: Where,
    what: str,
    finite: bool = False,
) -> np.ndarray:
    """The one place data is cast onto an input's dtype: a polars text Series (CSV/TSV
    cells) or a typed array (NPY/NPZ/Parquet/JSON Lines/frames, or CSV parsed fast).
    ``finite``: the reader already saw that every value is finite (skips that scan)."""
    if finite and getattr(values, "dtype", None) == dtype:
        return values  # type: ignore[no-any-return]
    if type(values).__module__.startswith("polars"):
        import polars as pl

        if values.dtype == pl.String:
            return coerce_text(values, dtype, policy=policy, allow_nan=allow_nan, where=where)
        from modelforge.data.tabular import series_to_numpy

        values = series_to_numpy(values)
    return coerce_array(values, dtype, policy=policy, allow_nan=allow_nan, where=where, what=what)


def _missing_int(where: str, target: str) -> DataError:
    return DataError(
        f"missing value at {where}: {target} inputs cannot hold a missing value",
        hint=_FILL_HINT,
        code="nan_value",
    )


def coerce_array(
    arr: np.ndarray, dtype: str, *, policy: CastPolicy, allow_nan: bool, where: Where, what: str
) -> np.ndarray:
    """Cast a typed array (NPY/NPZ/Parquet/JSONL column) onto ``dtype`` under the policy."""
    import numpy as np

    if dtype == "str":
        return _to_strings(arr, policy, where, what, allow_nan)
    target = np.dtype(dtype)
    src = arr.dtype
    if src.kind in "OUS":
        if policy == "strict":
            _refuse_kind(src, target, what)
        import polars as pl

        flat = arr.reshape(-1)
        texts = [
            None if v is None else (v.decode() if isinstance(v, bytes) else str(v)) for v in flat
        ]
        out = coerce_text(
            pl.Series(texts, dtype=pl.String),
            dtype,
            policy=policy,
            allow_nan=allow_nan,
            where=lambda r, c: where(*_cell(arr, r)),
        )
        return out.reshape(arr.shape)
    if not src.isnative:
        arr = arr.astype(src.newbyteorder("="))
        src = arr.dtype
    if src.kind in "mM" and src != target:
        from modelforge.data.cast_time import temporal

        return temporal(arr, target, policy, where, what, allow_nan)
    if src == target:
        check_finite(arr, where, allow_nan)
        return arr
    if policy == "strict":
        _refuse_kind(src, target, what)
    if src.kind == "c" and target.kind != "c":
        if policy != "force":
            raise DataError(
                f"{what} expects {target.name} but the data ({where(0, 0)}) is complex "
                f"({src.name}); the imaginary part would be dropped",
                hint="pass the real part (array.real), or --cast force to drop it",
                code="dtype_mismatch",
            )
        with np.errstate(all="ignore"):
            return _forced_real(arr, target)
    if src.kind == "f" and target.kind not in "iub":  # integer targets refuse NaN below
        check_finite(arr, where, allow_nan)
    hint_lossy = "fix the data, or pass --cast force to cast like numpy"
    with np.errstate(invalid="ignore", over="ignore"):
        if target.kind == "f":
            if src.kind == "f":
                big = np.isfinite(arr) & (np.abs(arr) > np.finfo(target).max)
                if big.any():
                    _fail(
                        arr,
                        big,
                        where,
                        f"value beyond {target.name} range",
                        "fix the data",
                        "out_of_range",
                    )
            elif src.kind in "iu" and policy == "safe":
                inexact = np.abs(arr.astype(np.float64)) > _mantissa_bound(target)
                if inexact.any():
                    _fail(
                        arr,
                        inexact,
                        where,
                        f"integer not exactly representable as {target.name}",
                        hint_lossy,
                        "lossy_cast",
                    )
            return arr.astype(target)
        if target.kind in "iu":
            info = np.iinfo(target)
            if src.kind == "f":
                if not np.isfinite(arr).all():
                    _fail(
                        arr,
                        ~np.isfinite(arr),
                        where,
                        f"missing or infinite value: {target.name} inputs cannot hold NaN/inf",
                        _FILL_HINT,
                        "nan_value",
                    )
                out_range = (arr < info.min) | (arr > info.max)
                if out_range.any():
                    _fail(
                        arr,
                        out_range,
                        where,
                        f"value beyond {target.name} range",
                        "fix the data",
                        "out_of_range",
                    )
                if policy == "safe" and (np.trunc(arr) != arr).any():
                    _fail(
                        arr,
                        np.trunc(arr) != arr,
                        where,
                        f"non-integral value for {target.name} {what}",
                        hint_lossy,
                        "lossy_cast",
                    )
                return arr.astype(target)
            if src.kind in "iu":
                wide = arr.astype(np.float64) if src.itemsize >= 8 else arr.astype(np.int64)
                out_range = (wide < info.min) | (wide > info.max)
                if out_range.any() and policy == "safe":
                    _fail(
                        arr,
                        out_range,
                        where,
                        f"value beyond {target.name} range",
                        hint_lossy,
                        "out_of_range",
                    )
                return arr.astype(target)
            if src.kind == "b":
                return arr.astype(target)
        if target.kind == "b":
            if src.kind == "f" and not np.isfinite(arr).all():
                _fail(arr, ~np.isfinite(arr), where,
                      "missing or infinite value: bool inputs cannot hold NaN/inf",
                      _FILL_HINT, "nan_value")  # fmt: skip
            if policy == "safe" and src.kind in "iuf":
                not01 = (arr != 0) & (arr != 1)
                if not01.any():
                    _fail(
                        arr,
                        not01,
                        where,
                        "value other than 0/1 for a bool input",
                        hint_lossy,
                        "lossy_cast",
                    )
            return arr != 0 if src.kind in "iuf" else arr.astype(bool)
    if policy == "force":
        return arr.astype(target)
    _refuse_kind(src, target, what)
    raise AssertionError("unreachable")  # pragma: no cover


def _forced_real(arr: np.ndarray, target: np.dtype[Any]) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return arr.real.astype(target)


def _refuse_kind(src: Any, target: Any, what: str) -> None:
    raise DataError(
        f"{what} expects {getattr(target, 'name', target)} but the data is {src.name}",
        hint="convert the data, or pass --cast safe (lossless casts) or --cast force",
        code="dtype_mismatch",
    )


def _to_strings(
    arr: np.ndarray, policy: CastPolicy, where: Where, what: str, allow_nan: bool
) -> np.ndarray:
    import numpy as np

    kind = arr.dtype.kind
    if kind == "U":
        return arr
    if kind == "S":
        try:
            return np.char.decode(arr, "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{what}: bytes are not valid UTF-8", code="encoding_error") from None
    if kind == "O":
        flat = arr.reshape(-1)
        missing = [i for i, v in enumerate(flat) if v is None]
        if missing:
            if not allow_nan:
                raise DataError(
                    f"missing value at {where(*_cell(arr, missing[0]))}",
                    hint=_NAN_HINT,
                    code="nan_value",
                )
            arr = arr.copy()
            arr.reshape(-1)[missing] = ""
            flat = arr.reshape(-1)
        for i, v in enumerate(flat):
            if not isinstance(v, str):
                raise DataError(
                    f"non-text value for string {what} at {where(*_cell(arr, i))}",
                    hint="string inputs need text values",
                    code="dtype_mismatch",
                )
        return arr
    if policy == "force" or (policy == "safe" and kind in "iub"):
        return arr.astype(str)
    _refuse_kind(arr.dtype, "str", what)
    raise AssertionError("unreachable")  # pragma: no cover


def coerce_text(
    s: pl.Series,
    dtype: str,
    *,
    policy: CastPolicy,
    allow_nan: bool,
    where: Callable[[int, int], str],
) -> np.ndarray:
    """Convert one column of text cells (None = empty) onto ``dtype``; errors name the cell."""
    import numpy as np
    import polars as pl

    def fail(mask: pl.Series, problem: str, hint: str, code: str, values: pl.Series) -> None:
        i = int(mask.arg_true()[0])
        raise DataError(
            f"{problem} at {where(i, 0)}: {safe(repr(values[i]), 60)}", hint=hint, code=code
        )

    if dtype == "str":
        s = s.set(s == "", None)  # an empty cell, quoted or not, is a missing value
        if s.null_count() and not allow_nan:
            i = int(s.is_null().arg_true()[0])
            raise DataError(f"empty cell at {where(i, 0)}", hint=_NAN_HINT, code="nan_value")
        return s.fill_null("").to_numpy()
    text = s.str.strip_chars()
    missing = text.str.to_lowercase().is_in(list(NA_TEXT)) | (text == "")
    text = text.set(missing.fill_null(False), None)
    target = np.dtype(dtype)
    if text.null_count() and target.kind in "iub":
        i = int(text.is_null().arg_true()[0])
        raise _missing_int(where(i, 0), target.name)
    if text.null_count() and not allow_nan:
        i = int(text.is_null().arg_true()[0])
        cell = s[i]
        what = (
            "the cell is empty"
            if cell is None or not str(cell).strip()
            else f"'{safe(cell, 40)}' means a missing value"
        )
        raise DataError(
            f"missing value at {where(i, 0)}: {what}",
            hint=_NAN_HINT,
            code="nan_value",
        )
    nonnull = text.is_not_null()
    if target.kind == "f":
        parsed = text.cast(pl.Float64, strict=False)
        bad = parsed.is_null() & nonnull
        if bad.any():
            fail(bad, "non-numeric text", "fix the cell or map another column", "non_numeric", s)
        values = parsed.fill_null(float("nan")).to_numpy()
        finite = np.isfinite(values)
        spelled_inf = text.str.to_lowercase().is_in(list(_INF_TEXT)).fill_null(False).to_numpy()
        if not allow_nan and not finite.all():
            fail(pl.Series(~finite), "NaN or infinite value", _NAN_HINT, "nan_value", s)
        big = (finite & (np.abs(values) > np.finfo(target).max)) | (
            ~finite & ~np.isnan(values) & ~spelled_inf
        )
        if big.any():
            fail(
                pl.Series(big),
                f"value beyond {target.name} range",
                "fix the data",
                "out_of_range",
                s,
            )
        return values.astype(target)
    if target.kind in "iu":
        as_int = text.cast(pl.Int64, strict=False)
        bad = as_int.is_null() & nonnull
        if bad.any():
            if policy == "strict":
                fail(
                    bad,
                    f"not an integer literal for {target.name}",
                    "fix the data, or pass --cast safe",
                    "dtype_mismatch",
                    s,
                )
            floats = coerce_text(s, "float64", policy=policy, allow_nan=False, where=where)
            return coerce_array(
                floats,
                dtype,
                policy=policy,
                allow_nan=False,
                where=lambda r, c: where(r, 0),
                what="input",
            )
        return coerce_array(
            as_int.to_numpy(),
            dtype,
            policy="force" if policy == "force" else "safe",
            allow_nan=False,
            where=lambda r, c: where(r, 0),
            what="input",
        )
    if target.kind == "b":
        low = text.str.to_lowercase()
        truth = {"true": True, "false": False}
        if policy != "strict":
            truth.update({"1": True, "0": False})
        known = low.is_in(list(truth))
        bad = ~known & nonnull
        if bad.any():
            fail(bad, "not a boolean (true/false)", "fix the cell", "non_boolean", s)
        return low.is_in(["true", "1"]).to_numpy()
    raise DataError(
        f"inputs of dtype {target.name} cannot be fed from text columns",
        hint="use NPY/NPZ input",
        code="unsupported_dtype",
    )
