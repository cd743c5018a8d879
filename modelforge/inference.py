"""Public prediction API: ``predict``, ``iter_predict``, ``predict_to`` and ``explain``
(re-exported as ``modelforge.predict``, ``modelforge.iter_predict``, ``modelforge.predict_to``
and ``modelforge.explain_predict``).

The CLI's ``modelforge predict`` is ``predict_to``; Python users call ``predict`` for a
DataFrame / dict of arrays, or ``iter_predict`` to stream batches. MODEL is a path or a
store reference (``name``, ``name:3``, ``name:prod``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from modelforge.data.cast import check_policy
from modelforge.data.formats import STDIO, output_format
from modelforge.data.inline import data_from_json, frame_plan
from modelforge.data.readers import DataPlan, ReadOptions, open_data
from modelforge.data.writers import (
    OutputValue,
    check_clashes,
    flatten,
    open_writer,
    planned_names,
)
from modelforge.engine.runner import DEFAULT_BATCH_SIZE, Runner, fixed_batch, prefetch, rebatch
from modelforge.engine.session import SessionConfig
from modelforge.errors import DataError, UsageError
from modelforge.text import safe

if TYPE_CHECKING:
    import numpy as np
    from onnx import ModelProto

    from modelforge.engine.session import Session
    from modelforge.model.schema import ModelSchema
    from modelforge.store.resolve import ModelLocation

Progress = Callable[[int, int, int | None], None]  # rows, bytes read, total bytes


@dataclass
class LoadedModel:
    location: ModelLocation
    data: bytes
    proto: ModelProto | None = None  # parsed by onnx only when needed (see load)
    schema: ModelSchema | None = None

    @property
    def stored_columns(self) -> Any:
        return (self.location.metadata or {}).get("columns")

    def parse(self) -> ModelProto:
        """Parse with onnx and check external data (inside the model folder only)."""
        if self.proto is None:
            from modelforge.model.external import check_external_data
            from modelforge.model.load import parse_model_bytes
            from modelforge.model.schema import extract_schema

            proto = parse_model_bytes(self.data, os.fspath(self.location.path))
            check_external_data(
                proto, Path(self.location.path).parent, allow_hardlinks=self.location.trusted
            )
            self.proto = proto
            self.schema = extract_schema(proto)
        return self.proto


def load(model: str | os.PathLike[str], *, parse: bool = False) -> LoadedModel:
    """Resolve and read a model.

    onnx (~0.1-0.2 s to import) is needed only when the model may reference external data:
    such a reference always carries the literal key ``location`` in the file, so a model
    without those bytes cannot make onnxruntime open another file, and its session is
    created straight from the bytes. Otherwise (or with ``parse``) the model is parsed and
    every external-data reference is checked first.
    """
    from modelforge.model.files import read_capped
    from modelforge.store.resolve import resolve_model

    loc = resolve_model(model)
    lm = LoadedModel(loc, read_capped(loc.path))
    if parse or b"location" in lm.data:
        lm.parse()
    return lm


def _schema_from_session(session: Session) -> ModelSchema:
    from modelforge.model.schema import ELEM_TYPES, ModelSchema, TensorSpec

    numpy_of = {name: np_name for name, np_name in ELEM_TYPES.values()}

    def spec(arg: Any) -> TensorSpec:
        t = str(arg.type)
        dtype = numpy_of.get(t[7:-1]) if t.startswith("tensor(") else None
        shape = (
            None
            if arg.shape is None
            else [d if isinstance(d, (int, str)) or d is None else None for d in arg.shape]
        )
        return TensorSpec(name=arg.name, type=t, dtype=dtype, shape=shape)

    inner = session.inner
    return ModelSchema(
        [spec(a) for a in inner.get_inputs()], [spec(a) for a in inner.get_outputs()]
    )


def open_session(
    lm: LoadedModel, cfg: SessionConfig, no_upgrade: bool
) -> tuple[Session, int | None]:
    from modelforge.engine.session import create_session
    from modelforge.engine.upgrade import create_upgrading
    from modelforge.errors import ModelForgeError

    folder = Path(lm.location.path).parent
    if lm.proto is None:
        try:
            session = create_session(lm.data, cfg, external_data_dir=folder)
        except ModelForgeError as exc:
            if exc.code in ("provider_unavailable", "unknown_provider", "invalid_option"):
                raise
            lm.parse()  # a precise error for files that are not ONNX; else upgrade below
        else:
            lm.schema = _schema_from_session(session)
            return session, None
    assert lm.proto is not None
    return create_upgrading(lm.data, lm.proto, cfg, folder=folder, no_upgrade=no_upgrade)


@dataclass(frozen=True)
class PredictSummary:
    model: dict[str, Any]
    inputs: list[str]
    input_format: str
    output: str
    output_format: str
    rows: int
    batches: int
    runs: int
    outputs: list[str]
    columns: list[str]
    providers_requested: list[str]
    providers_used: list[str]
    mapping: dict[str, Any]
    upgraded_to_opset: int | None
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ExplainResult:
    model: dict[str, Any]
    data: dict[str, Any]
    feeds: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    batch: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@contextmanager
def _collect_warnings() -> Iterator[list[str]]:
    got: list[str] = []

    class _H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                got.append(record.getMessage())

    logger = logging.getLogger("modelforge")
    handler = _H()
    logger.addHandler(handler)
    try:
        yield got
    finally:
        logger.removeHandler(handler)


@dataclass(frozen=True)
class PredictOptions:
    """How data is read, mapped and batched: shared by ``predict``, ``iter_predict``,
    ``predict_to`` and ``explain`` (each also takes these as keyword arguments)."""

    fmt: str | None = None  # input format (default: from the extension; stdin: CSV)
    maps: dict[str, list[str]] | None = None  # input name -> columns (--map)
    columns: list[str] | None = None  # ordered columns of the single 2-D input
    keep: list[str] | None = None  # columns copied to the output, never fed
    cast: str = "safe"  # safe | strict | force
    allow_nan: bool = False
    encoding: str | None = None
    delimiter: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    outputs: list[str] | None = None  # model outputs to produce (default: all)
    data_json: str | None = None  # inline JSON instead of INPUT files (--data)

    @classmethod
    def build(cls, options: PredictOptions | None, kw: dict[str, Any]) -> PredictOptions:
        """``options`` with the keyword arguments ``kw`` applied; unknown keys are a
        TypeError, as for any function."""
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in kw if k not in names]
        if unknown:
            raise TypeError(f"unexpected arguments: {', '.join(unknown)}")
        return dataclasses.replace(options or cls(), **kw)

    def read_options(self) -> ReadOptions:
        return ReadOptions(
            fmt=self.fmt,
            maps=dict(self.maps or {}),
            columns=self.columns,
            keep=list(self.keep or []),
            policy=check_policy(self.cast),
            allow_nan=self.allow_nan,
            encoding=self.encoding,
            delimiter=self.delimiter,
        )


def _plan(
    lm: LoadedModel, data: Any, options: ReadOptions, stdin: IO[bytes] | None, data_json: str | None
) -> DataPlan:
    schema = lm.schema
    assert schema is not None, "open_session or parse() sets the schema"
    if data_json is not None:
        if data:
            raise UsageError("--data and INPUT files cannot be combined", code="invalid_option")
        return data_from_json(data_json, schema, options)
    if data is None or isinstance(data, (str, os.PathLike)):
        paths = [os.fspath(data)] if data is not None else []
        return open_data(paths, schema, options, stored=lm.stored_columns, stdin=stdin)
    if isinstance(data, (list, tuple)) and all(isinstance(d, (str, os.PathLike)) for d in data):
        return open_data(
            [os.fspath(d) for d in data], schema, options, stored=lm.stored_columns, stdin=stdin
        )
    return frame_plan(data, schema, options, lm.stored_columns)


def _check_rows(plan: DataPlan, rows: int) -> None:
    if rows == 0:
        raise DataError(
            f"no rows to predict in {', '.join(safe(s) for s in plan.sources)}",
            hint="pass data with at least one row",
            code="no_rows",
        )


def _check_planned_clashes(
    schema: ModelSchema, chosen: list[str], keep: list[str], ofmt: str
) -> None:
    """Refuse a kept column named like an output column before anything runs (names that
    only the data can tell, e.g. ZipMap keys, are checked again by the writer)."""
    if not keep:
        return
    names = [
        (n, spec.name)
        for spec in schema.outputs
        if spec.name in chosen
        for n in (planned_names(spec, ofmt) or [])
    ]
    check_clashes(keep, names, ofmt)


def _batches(plan: DataPlan, runner: Runner) -> Iterator[Any]:
    it = plan.batches()
    if os.environ.get("MODELFORGE_PREFETCH", "0") == "1":
        it = prefetch(it)
    return rebatch(it, runner.fixed) if runner.fixed and runner.fixed > 1 else it


def predict_to(
    model: str | os.PathLike[str],
    inputs: list[str] | None = None,
    output: str | None = None,
    options: PredictOptions | None = None,
    *,
    out_format: str | None = None,
    session_config: SessionConfig | None = None,
    no_upgrade: bool = False,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    progress: Progress | None = None,
    temp_path: str | None = None,
    **kw: Any,
) -> PredictSummary:
    """Predict from files (or stdin) to a file (atomically) or stdout; returns a summary.

    ``options`` (or keyword arguments named as its fields: ``columns=``, ``keep=``, ...)
    say how the data is read. ``temp_path``: the temp file to write before the final
    rename (default: a fresh name in the output's folder).
    """
    t0 = time.perf_counter()
    opts = PredictOptions.build(options, kw)
    cfg = session_config or SessionConfig()
    out_path = None if output in (None, STDIO) else output
    json_default = "jsonl" if opts.data_json and not out_path else None
    ofmt = output_format(out_path, out_format or json_default)
    with _collect_warnings() as warnings:
        lm = load(model)
        session, upgraded = open_session(lm, cfg, no_upgrade)
        assert lm.schema is not None
        runner = Runner(session, lm.schema, outputs=opts.outputs, batch_size=opts.batch_size)
        plan = _plan(lm, inputs or None, opts.read_options(), stdin, opts.data_json)
        _check_planned_clashes(lm.schema, runner.outputs, plan.mapping.keep, ofmt)
        writer = open_writer(out_path, ofmt, stdout=stdout, temp_path=temp_path)
        rows = batches = 0
        columns_out: list[str] = []
        try:
            for batch in _batches(plan, runner):
                values = runner.run(batch)
                if not columns_out:
                    columns_out = list(batch.keep) + [n for v in values for n, _ in flatten(v)]
                writer.write(batch.keep, values)
                rows += batch.rows
                batches += 1
                if progress is not None:
                    progress(rows, batch.bytes_read, plan.total_bytes)
            _check_rows(plan, rows)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return PredictSummary(
        model=lm.location.to_dict(),
        inputs=plan.sources,
        input_format=plan.fmt,
        output=out_path or "-",
        output_format=ofmt,
        rows=rows,
        batches=batches,
        runs=runner.runs,
        outputs=runner.outputs,
        columns=columns_out,
        providers_requested=session.to_dict()["providers_requested"],
        providers_used=session.to_dict()["providers_used"],
        mapping=plan.mapping.to_dict(),
        upgraded_to_opset=upgraded,
        seconds=round(time.perf_counter() - t0, 4),
        warnings=list(warnings),
    )


def _opset(lm: LoadedModel) -> int:
    from modelforge.engine.upgrade import default_opset

    return default_opset(lm.parse())


def explain(
    model: str | os.PathLike[str],
    inputs: list[str] | None = None,
    options: PredictOptions | None = None,
    *,
    stdin: IO[bytes] | None = None,
    **kw: Any,
) -> ExplainResult:
    """The resolved mapping, dtypes, shapes, casts and batch plan; the model is not run."""
    from modelforge.engine.runner import select_outputs

    opts = PredictOptions.build(options, kw)
    lm = load(model, parse=True)
    plan = _plan(lm, inputs or None, opts.read_options(), stdin, opts.data_json)
    assert lm.schema is not None
    chosen = select_outputs(lm.schema, opts.outputs)
    fixed = fixed_batch(lm.schema)
    feeds = []
    for b in plan.mapping.bindings:
        d = b.to_dict()
        nan = " (NaN allowed)" if opts.allow_nan else ""
        d["cast"] = f"{opts.cast}: data -> {b.dtype}{nan}"
        feeds.append(d)
    return ExplainResult(
        model={**lm.location.to_dict(), "opset": _opset(lm)},
        data=plan.to_dict(),
        feeds=feeds,
        outputs=[o.to_dict() for o in lm.schema.outputs if o.name in chosen],
        batch={
            "batch_size": fixed or opts.batch_size,
            "fixed_batch": fixed,
            "streaming": plan.fmt not in ("npz", "json"),
        },
    )


@dataclass
class PredictionBatch:
    start: int
    rows: int
    outputs: list[OutputValue]
    keep: dict[str, Any]


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
    """Stream predictions batch by batch. ``data``: path(s), DataFrame, array or dict.

    ``options`` or keyword arguments named as its fields (fmt, maps, columns, keep, cast,
    allow_nan, encoding, delimiter, batch_size, outputs) say how the data is read.
    """
    cfg = session_config or SessionConfig(providers=providers)
    opts = PredictOptions.build(options, kw)
    if opts.data_json is not None:
        raise TypeError("data_json is for predict_to and explain; pass the data as data=")
    lm = load(model)
    session, _ = open_session(lm, cfg, no_upgrade)
    assert lm.schema is not None
    runner = Runner(session, lm.schema, outputs=opts.outputs, batch_size=opts.batch_size)
    plan = _plan(lm, data, opts.read_options(), None, None)
    rows = 0
    for batch in _batches(plan, runner):
        rows += batch.rows
        yield PredictionBatch(batch.start, batch.rows, runner.run(batch), batch.keep)
    _check_rows(plan, rows)


def iter_feeds(
    model: str | os.PathLike[str],
    data: Any = None,
    options: PredictOptions | None = None,
    *,
    stored_columns: list[str] | None = None,
    **kw: Any,
) -> Iterator[Any]:
    """The feeds ``iter_predict`` would give the model for ``data`` (the same mapping,
    stored columns and casts), as :class:`~modelforge.data.batch.Batch` objects; the model
    is not run. ``stored_columns``: the column map of a file about to be stored (as if it
    were recorded with the version). Used to record golden examples (``models add
    --example``)."""
    import dataclasses

    opts = PredictOptions.build(options, kw)
    lm = load(model, parse=True)
    if stored_columns is not None:
        meta = {**(lm.location.metadata or {}), "columns": list(stored_columns)}
        lm.location = dataclasses.replace(lm.location, metadata=meta)
    plan = _plan(lm, data, opts.read_options(), None, None)
    yield from plan.batches()


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
    dicts; ZipMap outputs add ``<name>_keys``). ``as_frame`` forces either form.
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
        return pl.concat(frames).to_pandas()
    out: dict[str, np.ndarray] = {}
    if parts:
        for i, o in enumerate(parts[0].outputs):
            out[o.name] = np.concatenate([p.outputs[i].array for p in parts])
            if o.keys is not None:
                out[f"{o.name}_keys"] = np.asarray(o.keys)
    return out


def _is_array_path(data: Any) -> bool:
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data).lower().endswith((".npy", ".npz"))
    return False


explain_predict = explain  # the name re-exported as modelforge.explain_predict
