"""Data given inline rather than as files: ``--data`` JSON (and ``.json`` files of the same
form), parsed into named arrays for an :class:`~modelforge.data.sources.ArraySource`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from modelforge.errors import DataError, UsageError
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np

    from modelforge.data.sources import ArraySource


def arrays_from_json(text: str, name: str = "--data") -> dict[str, np.ndarray]:
    """``{"x": [[5.1, 3.5, 1.4, 0.2]], "k": 3}``: input name -> nested lists or a scalar."""
    import numpy as np

    err = UsageError if name == "--data" else DataError
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise err(
            f"{safe(name)} is not valid JSON: {safe(why, 100)}",
            hint='write it as {"input": [[1.0, 2.0]]}',
            code="invalid_json",
        ) from None
    if not isinstance(value, dict) or not value:
        raise err(
            f"{safe(name)} must be a JSON object mapping input names to lists",
            hint="e.g. --data '{\"x\": [[5.1, 3.5, 1.4, 0.2]]}'",
            code="invalid_json",
        )
    arrays: dict[str, np.ndarray] = {}
    for k, v in value.items():
        try:
            arr = np.array(v)
        except ValueError:
            arr = np.array([], dtype=object)
        if arr.dtype == object:
            arr = _with_nulls(arr, f"{safe(name)} value for '{safe(k)}'")
        arrays[str(k)] = arr
    return arrays


def _with_nulls(arr: np.ndarray, what: str) -> np.ndarray:
    """A rectangular array with nulls (numpy makes it object): numbers and nulls become
    float64 with NaN; text or bools and nulls (or nulls alone) stay objects with None, cast
    like text cells. Both are missing values for the cast (refused unless --allow-nan, and
    always for integer and bool inputs). Anything else is ragged or mixes types."""
    import numpy as np

    flat = arr.reshape(-1)
    kinds = {type(x) for x in flat if x is not None}
    if arr.ndim and arr.size and not kinds & {list, dict}:
        if kinds and kinds <= {int, float}:
            values = [np.nan if x is None else x for x in flat]
            return np.array(values, dtype=np.float64).reshape(arr.shape)
        if kinds <= {str} or kinds == {bool}:  # cast as text cells: None is missing
            return arr
    raise DataError(
        f"{what} is ragged or mixes types",
        hint="use nested lists of equal length, one JSON type per array (null for a missing value)",
        code="invalid_json",
    )


def json_source(text: str) -> ArraySource:
    from modelforge.data.sources import ArraySource

    return ArraySource(arrays_from_json(text), "--data", fmt="json")
