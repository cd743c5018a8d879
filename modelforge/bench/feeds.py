"""Inputs for a benchmark: one feed dict per batch size, synthesized or read from data.

* Batch sizes apply to symbolic (or unknown) first dimensions only. A model whose inputs fix
  the first dimension runs at that size (``fixed``); a model without any first dimension
  (scalars only) runs one "row" per run.
* Synthesized inputs follow :mod:`modelforge.model.synth` (``--dim NAME=VALUE`` for the other
  symbolic dims); ``--dim`` may not name a batch dimension (that is ``--batch-sizes``).
* ``--data FILE`` goes through predict's plan (:func:`modelforge.inference.make_plan`:
  same formats, mapping and cast rules);
  only as many rows as the largest batch size are read, and when the file has fewer rows
  they are repeated to fill the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.errors import DataError, InvalidModelError, UsageError
from modelforge.log import warn
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np

    from modelforge.inference import LoadedModel
    from modelforge.model.schema import ModelSchema

DEFAULT_BATCH_SIZES = (1, 8, 64, 512)
MAX_FEED_BYTES = 1 << 30  # per run; larger batch sizes are skipped with a warning


@dataclass
class ModelInputs:
    """Feeds per batch size (rows per run = the batch size)."""

    sizes: list[int]
    fixed: int | None
    feeds: dict[int, dict[str, np.ndarray]]
    data_rows: int | None = None  # rows read from --data (None: synthesized)
    skipped: list[int] = field(default_factory=list)

    def shapes(self, size: int) -> dict[str, list[int]]:
        return {k: list(v.shape) for k, v in self.feeds[size].items()}

    def describe(self) -> dict[str, Any]:
        return {
            "batch_sizes": self.sizes,
            "fixed_batch": self.fixed,
            "source": "synthesized" if self.data_rows is None else "data",
            "data_rows": self.data_rows,
            "skipped_batch_sizes": self.skipped,
        }


def batch_dim_names(schema: ModelSchema) -> set[str]:
    return {s.shape[0] for s in schema.inputs if s.shape and isinstance(s.shape[0], str)}


def _has_free_batch(schema: ModelSchema) -> bool:
    return any(s.shape and not isinstance(s.shape[0], int) for s in schema.inputs)


def batch_sizes_for(
    schema: ModelSchema, requested: tuple[int, ...] | None, label: str
) -> tuple[list[int], int | None]:
    """The batch sizes a model can run at, and its fixed batch size if it has one."""
    from modelforge.engine.runner import fixed_batch

    fixed = fixed_batch(schema)
    if fixed is not None:
        if requested is not None and tuple(requested) != (fixed,):
            warn(f"{label} fixes its batch dimension to {fixed}; --batch-sizes is ignored for it")
        return [fixed], fixed
    if not _has_free_batch(schema):
        return [1], None
    return list(requested or DEFAULT_BATCH_SIZES), None


def _feed_bytes(schema: ModelSchema, dims: dict[str, int], size: int) -> int:
    import numpy as np

    from modelforge.model.synth import resolve_shape

    total = 0
    for spec in schema.inputs:
        if spec.dtype is None or spec.shape is None:
            continue  # synthesis reports these inputs with a clear error
        count = 1
        for d in resolve_shape(spec, dims, size):
            count *= d
        itemsize = 8 if spec.dtype == "str" else np.dtype(spec.dtype).itemsize
        total += count * itemsize
    return total


def _read_rows(
    lm: LoadedModel,
    schema: ModelSchema,
    data: str,
    need: int,
    maps: dict[str, list[str]] | None = None,
    columns: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Up to ``need`` rows of feeds from a data file (or inline JSON), coerced to the schema."""
    import numpy as np

    from modelforge.data.options import PredictOptions
    from modelforge.inference import make_plan

    inline = data.lstrip().startswith("{")
    options = PredictOptions(maps=maps, columns=columns, data_json=data if inline else None)
    try:
        plan = make_plan(lm, None if inline else data, options)
    except DataError as err:  # predict's hint names --explain, which bench does not have
        if err.hint and "--explain" in err.hint:
            err.hint = err.hint.replace(
                "--explain shows the mapping",
                "'modelforge predict MODEL DATA --explain' shows the mapping",
            )
        raise
    parts: list[dict[str, np.ndarray]] = []
    rows = 0
    batches = plan.batches()
    try:
        for batch in batches:
            if batch.rows:
                parts.append(batch.feeds)
                rows += batch.rows
            if rows >= need:
                break
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    if rows == 0:
        raise DataError(
            f"no rows to benchmark in {', '.join(safe(s) for s in plan.names)}",
            hint="pass data with at least one row",
            code="no_rows",
        )
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take_rows(arrays: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Exactly ``size`` rows: the first ones, or the available ones repeated in order."""
    import numpy as np

    out = {}
    for name, arr in arrays.items():
        n = arr.shape[0]
        if n >= size:
            out[name] = np.ascontiguousarray(arr[:size])
        else:
            out[name] = np.ascontiguousarray(np.take(arr, np.arange(size) % n, axis=0))
    return out


def prepare_inputs(
    lm: LoadedModel,
    schema: ModelSchema,
    *,
    label: str,
    requested: tuple[int, ...] | None,
    dims: dict[str, int],
    seed: int = 0,
    data: str | None = None,
    maps: dict[str, list[str]] | None = None,
    columns: list[str] | None = None,
    max_feed_bytes: int = MAX_FEED_BYTES,
) -> ModelInputs:
    """Feeds for every batch size this model will be benchmarked at."""
    from modelforge.model.synth import dim_names, synthesize_inputs

    named = sorted(batch_dim_names(schema) & set(dims))
    if named:
        raise UsageError(
            f"--dim {safe(named[0])}=... names the batch dimension of {label}",
            hint="set batch sizes with --batch-sizes; --dim is for the other symbolic "
            "dimensions (sequence length, image size)",
            code="invalid_option",
        )
    known = dim_names(schema)
    unknown = sorted(set(dims) - known)
    if unknown:
        warn(
            f"--dim {', '.join(safe(n) for n in unknown)} names no symbolic dimension of "
            f"{label} (its dims: {', '.join(safe(n) for n in sorted(known)) or 'none'}); "
            "it is not used there"
        )
    if not schema.inputs:
        raise DataError(
            f"{label} has no inputs, so there is nothing to feed",
            hint="benchmark a model that takes inputs",
            code="no_inputs",
        )
    if not schema.outputs:
        raise InvalidModelError(
            f"{label} declares no outputs, so a run computes nothing",
            hint="re-export the model with its outputs marked as graph outputs "
            "('modelforge validate MODEL' checks this)",
            code="no_outputs",
        )
    sizes, fixed = batch_sizes_for(schema, requested, label)
    kept: list[int] = []
    skipped: list[int] = []
    for size in sizes:
        if data is None and _feed_bytes(schema, dims, size) > max_feed_bytes:
            skipped.append(size)
        else:
            kept.append(size)
    if fixed is not None and not kept:  # the model's own fixed shape is that large
        raise UsageError(
            f"{label} fixes its batch dimension at {fixed}, and its synthesized inputs at that "
            f"size exceed {max_feed_bytes >> 20} MiB per run",
            hint="benchmark it on real inputs with --data (not synthesized, not capped)"
            + (", or pass smaller --dim values" if dims else ""),
            code="batch_too_large",
        )
    if skipped:
        warn(
            f"skipping batch size {', '.join(map(str, skipped))} for {label}: the inputs of one "
            f"run would exceed {max_feed_bytes >> 20} MiB"
        )
    if not kept:
        raise UsageError(
            f"every batch size is too large for {label} (inputs over "
            f"{max_feed_bytes >> 20} MiB per run)",
            hint="pass smaller --batch-sizes or smaller --dim values",
            code="batch_too_large",
        )
    if data is not None:
        rows = _read_rows(lm, schema, data, max(kept), maps, columns)
        n = next(iter(rows.values())).shape[0]
        if n < max(kept):
            warn(f"the data has {n} row(s); rows are repeated to fill batches of {max(kept)}")
        feeds = {size: _take_rows(rows, size) for size in kept}
        return ModelInputs(kept, fixed, feeds, data_rows=n, skipped=skipped)
    feeds = {}
    for size in kept:
        size_dims = {**dims, **{name: size for name in batch_dim_names(schema)}}
        batch = size if fixed is None and _has_free_batch(schema) else None
        feeds[size] = synthesize_inputs(schema, size_dims, seed=seed, batch=batch)
    return ModelInputs(kept, fixed, feeds, skipped=skipped)
