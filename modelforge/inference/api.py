"""Prediction for Python callers: ``predict`` (everything at once), ``iter_predict``
(batch by batch) and ``explain`` (the plan, without running the model)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelforge.data.options import PredictOptions

if TYPE_CHECKING:
    from modelforge.data.batch import Batch, OutputValue
    from modelforge.engine.session import SessionConfig


@dataclass(frozen=True)
class ExplainResult:
    model: dict[str, Any]
    data: dict[str, Any]
    feeds: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    batch: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def explain(
    model: str | os.PathLike[str],
    inputs: Any = None,
    options: PredictOptions | None = None,
    *,
    stdin: Any = None,
    **kw: Any,
) -> ExplainResult:
    """The resolved mapping, dtypes, shapes, casts, run mode and batch plan; the model is
    not run."""
    from modelforge.engine.runner import fixed_batch, select_outputs
    from modelforge.engine.upgrade import default_opset
    from modelforge.inference.core import make_plan
    from modelforge.inference.model import load

    opts = PredictOptions.build(options, kw)
    lm = load(model, parse=True)
    plan = make_plan(lm, inputs or None, opts, stdin)
    plan.close()
    assert lm.schema is not None
    chosen = select_outputs(lm.schema, opts.outputs)
    whole = plan.mode == "whole"
    fixed = None if whole else fixed_batch(lm.schema)
    feeds = []
    for b in plan.mapping.bindings:
        d = b.to_dict()
        nan = " (NaN allowed)" if opts.allow_nan else ""
        d["cast"] = f"{opts.cast}: data -> {b.dtype}{nan}"
        feeds.append(d)
    return ExplainResult(
        model={**lm.location.to_dict(), "opset": default_opset(lm.parse())},
        data=plan.to_dict(),
        feeds=feeds,
        outputs=[o.to_dict() for o in lm.schema.outputs if o.name in chosen],
        batch={
            "mode": plan.mode,
            "reason": plan.reason,
            "batch_size": None if whole else (fixed or opts.batch_size),
            "fixed_batch": fixed,
            "streaming": not whole and plan.sources[0].kind == "table",
        },
    )


@dataclass(frozen=True)
class PredictionBatch:
    """One batch of ``iter_predict``: rows ``start`` .. ``start + rows - 1`` of the input,
    each output as an :class:`~modelforge.data.batch.OutputValue` (``.name``, ``.value``: a
    numpy array for a tensor) and the ``keep`` columns."""

    start: int
    rows: int
    outputs: list[OutputValue]
    keep: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists, not arrays or Series): JSON-serialisable."""
        return {
            "start": int(self.start),
            "rows": int(self.rows),
            "outputs": {o.name: _plain(o.value) for o in self.outputs},
            "keep": {str(k): _plain(v) for k, v in self.keep.items()},
        }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    for method in ("tolist", "to_list"):  # numpy arrays and scalars, polars Series
        if hasattr(value, method):
            return _plain(getattr(value, method)()) if method == "to_list" else value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def iter_predict(
    model: str | os.PathLike[str],
    data: Any = None,
    options: PredictOptions | None = None,
    *,
    providers: list[str] | None = None,
    no_upgrade: bool = False,
    session_config: SessionConfig | None = None,
    **kw: Any,
) -> Iterator[PredictionBatch]:
    """Stream predictions batch by batch, at most ``batch_size`` rows each (for a model with
    a fixed batch dimension, a multiple of it). ``data``: path(s), a Source, DataFrame, array or
    dict. ``options`` or keyword arguments named as its fields (fmt, maps, columns, keep,
    cast, allow_nan, encoding, delimiter, batch_size, outputs, whole) say how the data is
    read. A model run on whole tensors yields one batch holding its outputs as they are.
    The arguments are checked at the call (a wrong one raises here, not at the first
    ``next``); the model is opened when iteration starts."""
    from modelforge.engine.session import SessionConfig
    from modelforge.errors import ArgumentError, check_type
    from modelforge.store.resolve import ModelLocation

    ref = "a path or a store reference such as 'NAME:3'"
    check_type(model, (str, os.PathLike, ModelLocation), "model", ref)
    if data is None:
        raise ArgumentError(
            "data is required: the rows to predict",
            hint="pass a path, a list of paths, a DataFrame, a numpy array, a dict of arrays, "
            "or '-' to read standard input",
        )
    if isinstance(providers, str):  # providers="cpu" is one provider
        providers = [providers]
    cfg = session_config or SessionConfig(providers=providers)
    opts = PredictOptions.build(options, kw)
    if opts.data_json is not None:
        raise ArgumentError(
            "data_json is for predict_to and explain", hint="pass the data as data="
        )
    return _iter_predict(model, data, opts, cfg, no_upgrade)


def _iter_predict(
    model: str | os.PathLike[str],
    data: Any,
    opts: PredictOptions,
    cfg: SessionConfig,
    no_upgrade: bool,
) -> Iterator[PredictionBatch]:
    from contextlib import closing

    from modelforge.engine.runner import Runner, rebatch, split_batches
    from modelforge.inference.core import _no_rows, make_plan
    from modelforge.inference.model import load, open_session

    lm = load(model)
    session, _ = open_session(lm, cfg, no_upgrade)
    assert lm.schema is not None
    plan = make_plan(lm, data, opts)
    whole = plan.mode == "whole"
    try:
        runner = Runner(
            session, lm.schema, outputs=opts.outputs, batch_size=opts.batch_size, whole=whole
        )
    except BaseException:
        plan.close()
        raise
    if whole:
        batch = plan.whole()
        yield PredictionBatch(0, batch.rows, runner.run_whole(batch.feeds), batch.keep)
        return
    rows = 0
    it = plan.batches()
    size = opts.batch_size
    if runner.fixed and runner.fixed > 1:
        it = rebatch(it, runner.fixed)
        size = max(runner.fixed, size - size % runner.fixed)  # whole multiples only
    it = split_batches(it, size)
    with closing(it):  # type: ignore[type-var]
        for batch in it:
            rows += batch.rows
            yield PredictionBatch(batch.start, batch.rows, runner.run(batch), batch.keep)
    if rows == 0:
        _no_rows(plan)


def iter_feeds(
    model: str | os.PathLike[str],
    data: Any = None,
    options: PredictOptions | None = None,
    *,
    stored_columns: list[str] | None = None,
    **kw: Any,
) -> Iterator[Batch]:
    """The feeds ``iter_predict`` would give the model for ``data`` (the same plan: mapping,
    stored columns and casts), as :class:`~modelforge.data.batch.Batch` objects; the model
    is not run. ``stored_columns``: the column map of a file about to be stored (as if it
    were recorded with the version). Used to record golden examples (``models add
    --example``)."""
    import dataclasses
    from contextlib import closing

    from modelforge.inference.core import make_plan
    from modelforge.inference.model import load

    opts = PredictOptions.build(options, kw)
    lm = load(model, parse=True)
    if stored_columns is not None:
        meta = {**(lm.location.metadata or {}), "columns": list(stored_columns)}
        lm.location = dataclasses.replace(lm.location, metadata=meta)
    plan = make_plan(lm, data, opts)
    try:
        with closing(plan.batches()) as it:  # type: ignore[type-var]
            yield from it
    finally:
        plan.close()


def predict(
    model: str | os.PathLike[str],
    data: Any = None,
    *,
    as_frame: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Predict everything at once.

    Returns a pandas DataFrame (kept columns, then output columns named as in the CSV
    output) for tabular data, or a dict output name -> array for arrays (NPY/NPZ, numpy,
    dicts; ZipMap outputs add ``<name>_keys``; a sequence output is a list of arrays).
    ``as_frame`` forces either form.
    """
    import numpy as np

    parts: list[PredictionBatch] = list(iter_predict(model, data, **kwargs))
    tabular = not (isinstance(data, (dict, np.ndarray)) or _is_array_path(data))
    if as_frame is None:
        as_frame = tabular
    if as_frame:
        import pandas as pd
        import polars as pl

        from modelforge.data.writers import _frame

        frames = [_frame(p.keep, p.outputs, neutralise=False) for p in parts]
        if not frames:
            return pd.DataFrame()
        return _to_pandas(pl.concat(frames))
    out: dict[str, Any] = {}
    if parts:
        for i, o in enumerate(parts[0].outputs):
            if o.kind != "tensor" or len(parts) == 1:
                out[o.name] = o.value
            else:
                out[o.name] = np.concatenate([p.outputs[i].value for p in parts])
            if o.keys is not None:
                out[f"{o.name}_keys"] = np.asarray(o.keys)
    return out


def _to_pandas(df: Any) -> Any:
    """polars -> pandas, keeping integer and bool columns with nulls (kept ids) as pandas'
    nullable ``Int64``/``boolean`` instead of float64 with NaN / object."""
    import pandas as pd

    pdf = df.to_pandas()
    for name, dtype in df.schema.items():
        column = df.get_column(name)
        if not column.null_count():
            continue
        if dtype.is_integer():
            pdf[name] = pd.array(column.to_list(), dtype=str(dtype))
        elif str(dtype) == "Boolean":
            pdf[name] = pd.array(column.to_list(), dtype="boolean")
    return pdf


def _is_array_path(data: Any) -> bool:
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data).lower().endswith((".npy", ".npz", ".json"))
    return False
