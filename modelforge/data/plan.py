"""The one place a data plan is built: sources + model schema + options -> mapping (and its
warnings, logged once), the run mode, and the feeds.

Run modes:

* ``rows`` (the default whenever the inputs share a leading row dimension): feeds are cut
  into batches of rows, the model runs per batch, and every output must have one entry
  per row. Tabular data (CSV, TSV, Parquet, JSON Lines, DataFrames) is always rows.
* ``whole``: array data (NPY, NPZ, JSON, dicts) for a model whose inputs do not share a
  row dimension (a [2, 3] next to a [3], weight or shape tensors passed as inputs,
  scalars, fixed leading dims that differ, a variable dim next to fixed ones) or whose
  declared outputs are not per row (scalars, fixed first dims): the model runs once on the
  whole arrays, as Polygraphy and onnxruntime's test runner do. ``--whole`` forces it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelforge.data.batch import Batch
from modelforge.data.mapping import Mapping, assemble, resolve_arrays, resolve_tabular
from modelforge.errors import DataError, UsageError
from modelforge.log import warn
from modelforge.text import safe

if TYPE_CHECKING:
    from modelforge.data.options import PredictOptions
    from modelforge.data.sources import Source
    from modelforge.model.schema import ModelSchema


@dataclass
class DataPlan:
    """What will be fed, and how; ``batches()`` / ``whole()`` produce the feeds (once)."""

    sources: list[Source]
    mapping: Mapping
    options: PredictOptions
    mode: str  # "rows" | "whole"
    reason: str  # why that mode, for --explain

    @property
    def fmt(self) -> str:
        return self.sources[0].fmt

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def total_bytes(self) -> int | None:
        sizes = [s.total_bytes for s in self.sources]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    @property
    def total_rows(self) -> int | None:
        rows = [s.total_rows for s in self.sources]
        return None if any(r is None for r in rows) else sum(r or 0 for r in rows)

    def _wanted(self) -> tuple[list[str], dict[str, str]]:
        dtypes = self.mapping.targets()
        return list(dict.fromkeys([*dtypes, *self.mapping.keep])), dtypes

    def batches(self) -> Iterator[Batch]:
        """Batches of rows over every source in order; sources are closed at the end (or
        when the consumer closes this generator)."""
        wanted, dtypes = self._wanted()
        keep = self.mapping.keep
        start = 0
        try:
            for src in self.sources:
                it = src.batches(wanted, dtypes)
                try:
                    for cb in it:
                        if cb.rows == 0:
                            continue
                        cb.start = start
                        cb.keep = {c: cb.columns.pop(c) for c in keep}
                        start += cb.rows
                        batch = assemble(
                            self.mapping,
                            cb,
                            policy=self.options.cast,
                            allow_nan=self.options.allow_nan,
                        )
                        check_shared_dims(self.mapping, batch.feeds, src.name)
                        yield batch
                finally:
                    close = getattr(it, "close", None)
                    if close is not None:
                        close()
        finally:
            self.close()

    def whole(self) -> Batch:
        """All the data as one run's feeds (array sources: the arrays as they are)."""
        from modelforge.data.batch import ColumnBatch

        try:
            if self.sources[0].kind == "arrays":
                src: Any = self.sources[0]
                cols = {b.columns[0]: src.arrays[b.columns[0]] for b in self.mapping.bindings}
                rows = src.total_rows or 0
                cb = ColumnBatch(src.name, 0, rows, cols)
                batch = assemble(
                    self.mapping,
                    cb,
                    policy=self.options.cast,
                    allow_nan=self.options.allow_nan,
                    whole=True,
                )
                check_shared_dims(self.mapping, batch.feeds, src.name)
                return batch
            parts = list(self.batches())
            return _join(parts)
        finally:
            self.close()

    def close(self) -> None:
        for s in self.sources:
            s.close()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.fmt,
            "sources": self.names,
            "bytes": self.total_bytes,
            "rows": self.total_rows,
            "cast": self.options.cast,
            "allow_nan": self.options.allow_nan,
            "mode": self.mode,
            "mode_reason": self.reason,
            "mapping": self.mapping.to_dict(),
        }


def check_shared_dims(mapping: Mapping, feeds: dict[str, Any], source: str) -> None:
    """Inputs that declare the same symbolic dimension (``N`` in a ``[N, 2]`` and a
    ``[N, 3]``) must agree on its size: a DataError naming both inputs, their sizes and the
    dimension, before onnxruntime fails on it with a broadcast message naming none."""
    seen: dict[str, tuple[str, int, int]] = {}  # dim name -> (input, axis, size)
    for b in mapping.bindings:
        arr = feeds.get(b.input)
        if arr is None or b.shape is None or arr.ndim != len(b.shape):
            continue
        for axis, dim in enumerate(b.shape):
            if not isinstance(dim, str) or not dim:
                continue
            size = int(arr.shape[axis])
            first = seen.setdefault(dim, (b.input, axis, size))
            if first[2] != size:
                raise DataError(
                    f"inputs '{safe(first[0])}' and '{safe(b.input)}' share dimension "
                    f"'{safe(dim)}' but {_size(first[0], first[1], first[2])} and "
                    f"{_size(b.input, axis, size)} (in '{safe(source)}')",
                    hint=f"give every input the same size for '{safe(dim)}'",
                    code="shape_mismatch",
                )


def _size(name: str, axis: int, size: int) -> str:
    if axis == 0:
        return f"'{safe(name)}' has {size} row{'s' if size != 1 else ''}"
    return f"'{safe(name)}' has {size} on axis {axis}"


def _join(parts: list[Batch]) -> Batch:
    import numpy as np

    if not parts:
        return Batch(0, 0, {})
    if len(parts) == 1:
        return parts[0]
    feeds = {k: np.concatenate([p.feeds[k] for p in parts]) for k in parts[0].feeds}
    keep: dict[str, Any] = {}
    for k in parts[0].keep:
        vals = [p.keep[k] for p in parts]
        keep[k] = np.concatenate(vals) if isinstance(vals[0], np.ndarray) else _concat_series(vals)
    return Batch(0, sum(p.rows for p in parts), feeds, keep, parts[-1].bytes_read)


def _concat_series(values: list[Any]) -> Any:
    import polars as pl

    return pl.concat(values)


def build_plan(
    sources: list[Source],
    schema: ModelSchema,
    options: PredictOptions,
    *,
    stored: Any = None,
) -> DataPlan:
    """Resolve the mapping and the run mode; nothing is read beyond headers/keys. The
    sources are closed if planning fails."""
    try:
        return _build(sources, schema, options, stored)
    except BaseException:
        for s in sources:
            s.close()
        raise


def check_has_inputs(schema: ModelSchema, model: str = "the model") -> None:
    """A model without inputs computes constants: there is no data to map, nothing per row."""
    if not schema.inputs:
        outs = ", ".join(f"'{safe(o.name)}'" for o in schema.outputs[:8]) or "none"
        raise DataError(
            f"{model} has no inputs, so predict has nothing to feed it (its outputs {outs} "
            "do not depend on any data)",
            hint="check that this is the model you meant ('modelforge inspect MODEL' lists "
            "its inputs); predict needs a model with at least one input",
            code="no_model_inputs",
        )


def _build(
    sources: list[Source], schema: ModelSchema, options: PredictOptions, stored: Any
) -> DataPlan:
    check_has_inputs(schema)
    first = sources[0]
    for s in sources[1:]:
        if s.columns != first.columns:
            what = "columns" if first.kind == "table" else "arrays"
            raise DataError(
                f"input '{safe(s.name)}' has different {what} from '{safe(first.name)}'",
                hint="all inputs of one run need the same "
                + ("header" if first.kind == "table" else "keys"),
                code="column_mismatch",
            )
    keep = options.keep_columns
    if first.kind == "table":
        mapping = resolve_tabular(
            schema,
            first.columns,
            maps=options.maps,
            columns_opt=options.columns,
            stored=stored,
            keep=keep,
            source=first.name,
        )
        mode = "whole" if options.whole else "rows"
        reason = "--whole was given" if options.whole else "tabular data is fed in batches of rows"
    else:
        if keep:
            raise UsageError(
                "--keep works with tabular inputs (CSV, TSV, Parquet, JSON Lines)",
                code="invalid_option",
            )
        mapping = resolve_arrays(
            schema,
            first.columns,
            single=bool(getattr(first, "single", False)),
            maps=options.maps,
            source=first.name,
        )
        mode, reason = choose_mode(schema, mapping, sources, options.whole)
    for w in mapping.warnings:
        warn(w)
    return DataPlan(list(sources), mapping, options, mode, reason)


def choose_mode(
    schema: ModelSchema, mapping: Mapping, sources: list[Any], force_whole: bool
) -> tuple[str, str]:
    """``rows`` when the inputs share a leading row dimension, else ``whole`` (module doc)."""
    mode, reason = _mode(schema, mapping, sources[0].arrays, force_whole)
    if mode == "whole" and len(sources) > 1:
        raise UsageError(
            f"the model runs once on whole tensors ({reason}), so it takes one input file, "
            f"not {len(sources)}",
            hint="pass one NPZ file",
            code="invalid_option",
        )
    if mode == "rows":
        for src in sources:
            lengths = {src.arrays[b.columns[0]].shape[0] for b in mapping.bindings}
            if len(lengths) > 1:
                raise DataError(
                    f"arrays in '{safe(src.name)}' have different row counts "
                    f"({', '.join(str(x) for x in sorted(lengths))})",
                    hint="every input array needs the same first dimension",
                    code="shape_mismatch",
                )
    return mode, reason


_UNNAMED = re.compile(r"unk__\d+")


def _mode(
    schema: ModelSchema, mapping: Mapping, arrays: dict[str, Any], force_whole: bool
) -> tuple[str, str]:
    if force_whole:
        return "whole", "--whole was given"
    specs = {s.name: s for s in schema.inputs}
    firsts: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for b in mapping.bindings:
        arr = arrays[b.columns[0]]
        spec = specs[b.input]
        if arr.ndim == 0 or spec.shape == []:
            return "whole", f"input '{safe(b.input)}' is a scalar"
        lengths[b.input] = int(arr.shape[0])
        if spec.shape:
            firsts[b.input] = spec.shape[0]
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{safe(k)}: {v}" for k, v in lengths.items())
        return "whole", f"the inputs' first dimensions differ ({shown})"
    fixed = {k: v for k, v in firsts.items() if isinstance(v, int) and v >= 0}
    symbolic = {k: v for k, v in firsts.items() if k not in fixed}
    if fixed and symbolic:
        k, v = next(iter(fixed.items()))
        s = next(iter(symbolic))
        return "whole", (
            f"input '{safe(k)}' fixes its first dimension to {v} while '{safe(s)}' has a "
            "variable one"
        )
    if len(set(fixed.values())) > 1:
        return "whole", "the inputs fix different first dimensions"
    # tf2onnx (and onnx shape inference) name every unknown dim on its own, unk__N: two
    # such names say nothing about being different dimensions
    names = {v for v in symbolic.values() if isinstance(v, str) and not _UNNAMED.fullmatch(v)}
    if len(names) > 1:
        return "whole", (
            "the inputs have different variable first dimensions ("
            + ", ".join(sorted(safe(n) for n in names))
            + ")"
        )
    for o in schema.outputs:
        if o.is_tensor and o.shape == []:
            return "whole", f"output '{safe(o.name)}' is a scalar"
        if o.is_tensor and o.shape and symbolic and isinstance(o.shape[0], int):
            return "whole", (
                f"output '{safe(o.name)}' has a fixed first dimension ({o.shape[0]}), not one "
                "entry per row"
            )
        if o.type.startswith("seq(tensor") or o.type.startswith("optional("):
            return "whole", f"output '{safe(o.name)}' is a {safe(o.type)}"
    n = next(iter(lengths.values()), 0)
    return "rows", f"the inputs share a leading row dimension ({n} rows)"


def cast_feeds(
    arrays: dict[str, Any],
    schema: ModelSchema,
    *,
    cast: str = "safe",
    allow_nan: bool = False,
    maps: dict[str, list[str]] | None = None,
    source: str = "request",
) -> dict[str, Any]:
    """Named arrays (a server's decoded request tensors) -> feeds of exactly the model's
    dtypes and shapes, under the cast policy; every message names the input (and
    ``source``). Missing inputs, fixed dims that differ and lossy casts are DataErrors."""
    from modelforge.data.options import PredictOptions
    from modelforge.data.sources import ArraySource

    opts = PredictOptions(cast=cast, allow_nan=allow_nan, maps=maps, whole=True)  # type: ignore[arg-type]
    return build_plan([ArraySource(dict(arrays), source)], schema, opts).whole().feeds
