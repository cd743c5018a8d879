"""Data given inline rather than as files: ``--data`` JSON, numpy arrays, dicts of arrays,
and pandas/polars DataFrames, planned like files (same mapping and cast rules)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelforge.data.readers import DataPlan, ReadOptions, array_plan
from modelforge.errors import DataError, UsageError
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np

    from modelforge.model.schema import ModelSchema


def data_from_json(text: str, schema: ModelSchema, options: ReadOptions) -> DataPlan:
    """``--data '{"x": [[5.1, 3.5, 1.4, 0.2]]}'``: input name -> nested lists."""
    import numpy as np

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"--data is not valid JSON: {safe(str(exc), 100)}",
            hint='write it as {"input": [[1.0, 2.0]]}',
            code="invalid_json",
        ) from None
    if not isinstance(value, dict) or not value:
        raise UsageError(
            "--data must be a JSON object mapping input names to lists",
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
            raise DataError(
                f"--data value for '{safe(k)}' is ragged or mixes types",
                hint="use nested lists of equal length",
                code="invalid_json",
            )
        arrays[k] = arr
    return array_plan([arrays], schema, options, fmt="json", sources=["--data"])


def frame_plan(data: Any, schema: ModelSchema, options: ReadOptions, stored: Any) -> DataPlan:
    """A pandas/polars DataFrame or a numpy array / dict of arrays given in Python."""
    import numpy as np

    if isinstance(data, dict):
        arrays = {str(k): np.asarray(v) for k, v in data.items()}
        return array_plan([arrays], schema, options, fmt="npz", sources=["<dict>"])
    if isinstance(data, np.ndarray):
        return array_plan([{"<array>": data}], schema, options, fmt="npy", sources=["<array>"])
    import polars as pl

    df = data if isinstance(data, pl.DataFrame) else pl.from_pandas(data)
    from modelforge.data.batch import ColumnBatch
    from modelforge.data.mapping import resolve_tabular
    from modelforge.data.readers import READ_ROWS
    from modelforge.data.tabular import series_to_numpy
    from modelforge.log import warn

    mapping = resolve_tabular(
        schema,
        [str(c) for c in df.columns],
        maps=options.maps,
        columns_opt=options.columns,
        stored=stored,
        keep=options.keep,
        source="<DataFrame>",
    )
    for w in mapping.warnings:
        warn(w)

    def it() -> Iterator[ColumnBatch]:
        used = list(mapping.targets())
        for lo in range(0, df.height, READ_ROWS):
            part = df.slice(lo, READ_ROWS)
            cols = {c: series_to_numpy(part.get_column(c)) for c in used}
            keep = {c: part.get_column(c) for c in options.keep}
            yield ColumnBatch("<DataFrame>", lo, part.height, cols, keep, file_row=lo)

    return DataPlan("frame", ["<DataFrame>"], mapping, None, it, options)
