"""The one prediction path: a plan (sources + mapping + mode), a runner, a writer.

``predict_to`` opens the model and the inputs, builds the plan once, checks output-name
clashes once, and hands everything to :func:`run_plan`, which the server and cluster
fronts call too: ``run_plan(plan, runner, writer)`` runs the plan in its mode (batches of
rows through a reader thread, or once on whole tensors) and returns :class:`RunStats`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from modelforge.data.formats import STDIO, output_format
from modelforge.data.options import PredictOptions
from modelforge.errors import DataError, UsageError, check_type
from modelforge.text import safe

if TYPE_CHECKING:
    from modelforge.data.batch import Batch, OutputValue
    from modelforge.data.plan import DataPlan
    from modelforge.data.sources import Source
    from modelforge.data.writers import Writer
    from modelforge.engine.isolate import Limits
    from modelforge.engine.runner import Runner
    from modelforge.engine.session import SessionConfig
    from modelforge.inference.model import LoadedModel
    from modelforge.model.schema import ModelSchema

# progress callback: {"rows", "bytes", "total_bytes", "total_rows"} (JSON-able: it may
# travel from the guarded child to the CLI)
Progress = Callable[[dict[str, Any]], None]


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
    mode: str = "rows"
    mode_reason: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RunStats:
    rows: int
    batches: int
    runs: int
    columns: list[str]
    mode: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
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


def make_plan(
    lm: LoadedModel, data: Any, options: PredictOptions, stdin: IO[bytes] | None = None
) -> DataPlan:
    """The plan for ``data``: paths, a Source (or list of them), a DataFrame, an array, a
    dict of arrays, or None with ``options.data_json`` / stdin."""
    from modelforge.data.inputs import open_sources
    from modelforge.data.plan import build_plan, check_has_inputs
    from modelforge.data.sources import python_source

    schema = lm.opened.ensure_schema() if lm.schema is None else lm.schema
    check_has_inputs(schema, f"model '{safe(lm.location.display)}'")
    sources: list[Source]
    if options.data_json is not None:
        if data:
            raise UsageError("--data and INPUT files cannot be combined", code="invalid_option")
        from modelforge.data.inline import json_source

        sources = [json_source(options.data_json)]
    elif data is None or isinstance(data, (str, os.PathLike)):
        sources = open_sources([os.fspath(data)] if data is not None else [], options, stdin)
    elif isinstance(data, (list, tuple)) and all(isinstance(d, (str, os.PathLike)) for d in data):
        sources = open_sources([os.fspath(d) for d in data], options, stdin)
    elif hasattr(data, "batches") and hasattr(data, "columns") and hasattr(data, "kind"):
        sources = [data]
    elif isinstance(data, (list, tuple)) and data and all(hasattr(d, "batches") for d in data):
        sources = list(data)
    else:
        sources = [python_source(data)]
    return build_plan(sources, schema, options, stored=lm.stored_columns)


def check_planned_clashes(
    schema: ModelSchema, chosen: list[str], keep: list[str], ofmt: str
) -> bool:
    """Refuse a kept column named like an output column before anything runs. True when
    the declared shapes named every output column; otherwise (ZipMap keys, symbolic dims)
    the writer checks the names on its first batch, once."""
    from modelforge.data.writers import check_clashes, planned_names

    if not keep:
        return True
    planned = [planned_names(spec, ofmt) for spec in schema.outputs if spec.name in chosen]
    names = [
        (n, spec.name)
        for spec in schema.outputs
        if spec.name in chosen
        for n in (planned_names(spec, ofmt) or [])
    ]
    check_clashes(keep, names, ofmt)
    return all(p is not None for p in planned)


def _column_names(keep: dict[str, Any], values: list[OutputValue]) -> list[str]:
    from modelforge.data.writers import flatten

    names = list(keep)
    for v in values:
        if v.kind == "tensor" and v.value.ndim >= 1:
            names.extend(n for n, _ in flatten(v))
        else:
            names.append(v.name)
    return names


def run_plan(
    plan: DataPlan, runner: Runner, writer: Writer, *, progress: Progress | None = None
) -> RunStats:
    """Run ``plan`` through ``runner`` into ``writer`` (not closed here)."""
    if plan.mode == "whole":
        batch = plan.whole()
        if batch.rows == 0 and not batch.feeds:
            _no_rows(plan)
        values = runner.run_whole(batch.feeds)
        first = next(iter(batch.feeds.values()), None)
        rows = int(first.shape[0]) if first is not None and first.ndim else 0
        writer.write_whole(values, rows, batch.keep)
        names = (
            [*batch.keep, *(v.name for v in values)]
            if writer.whole_ok
            else _column_names(batch.keep, values)
        )
        return RunStats(rows, 1, runner.runs, names, "whole")
    from modelforge.engine.runner import prefetch, rebatch

    it: Iterator[Batch] = plan.batches()
    if runner.fixed and runner.fixed > 1:
        it = rebatch(it, runner.fixed)
    one_batch = plan.total_rows is not None and plan.total_rows <= runner.batch_size
    if os.environ.get("MODELFORGE_PREFETCH", "1") == "1" and not one_batch:
        it = prefetch(it)  # (one batch: nothing to overlap, a thread start saved)
    rows = batches = 0
    columns: list[str] = []
    mode = "rows"
    with closing(it):  # type: ignore[type-var]
        for batch in it:
            values = runner.run(batch)
            if batches == 0:
                columns = _column_names(batch.keep, values)
                last = plan.total_rows is not None and batch.rows == plan.total_rows
                if last and not all(v.per_row(batch.rows) for v in values):
                    # one run over all the data: its outputs are whole, not per row
                    writer.write_whole(values, batch.rows, batch.keep)
                    return RunStats(batch.rows, 1, runner.runs, columns, "whole")
            writer.write(batch.keep, values, batch.rows)
            rows += batch.rows
            batches += 1
            if progress is not None:
                progress({
                    "rows": rows,
                    "bytes": batch.bytes_read,
                    "total_bytes": plan.total_bytes,
                    "total_rows": plan.total_rows,
                })  # fmt: skip
    if rows == 0:
        _no_rows(plan)
    return RunStats(rows, batches, runner.runs, columns, mode)


def _no_rows(plan: DataPlan) -> None:
    raise DataError(
        f"no rows to predict in {', '.join(safe(s) for s in plan.names)}",
        hint="pass data with at least one row",
        code="no_rows",
    )


def predict_to(
    model: str | os.PathLike[str],
    inputs: list[str] | Source | list[Source] | None = None,
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
    isolate: bool = False,
    limits: Limits | None = None,
    **kw: Any,
) -> PredictSummary:
    """Predict from files (or stdin, or Source objects) to a file (atomically) or stdout.

    ``options`` (or keyword arguments named as its fields: ``columns=``, ``keep=``, ...)
    say how the data is read. ``isolate``: run in the guarded child of
    :mod:`modelforge.engine.isolate` (under ``limits``) when that is possible here (path
    inputs, real stdio); a crash or an absurd allocation then cannot take the caller down.
    ``temp_path``: the temp file written before the final rename (default: a fresh name
    next to the output).
    """
    opts = PredictOptions.build(options, kw)
    cfg = session_config
    if output is not None:
        check_type(output, (str, os.PathLike), "output", "a file path, '-' or None (stdout)")
        output = os.fspath(output)
    if isinstance(inputs, (str, os.PathLike)):  # one path: isolated like a list of one
        inputs = [os.fspath(inputs)]
    paths = inputs is None or (
        isinstance(inputs, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in inputs)
    )
    if isolate and paths and stdin is None and stdout is None:
        from modelforge.engine.isolate import Limits, can_isolate, run_isolated

        if can_isolate("inherit"):
            from modelforge.data.writers import temp_name

            target = None if output in (None, STDIO) else output
            tmp = temp_path or (temp_name(target) if target else None)
            job = (model, inputs, output, opts, out_format, cfg, no_upgrade, tmp)
            on_progress = (lambda m: progress(m)) if progress is not None else None  # noqa: E731
            result = run_isolated(
                _job, *job, what="predict", limits=limits or Limits.for_jobs(),
                stdio="inherit", cleanup=[tmp] if tmp else [], on_progress=on_progress,
            )  # fmt: skip
            return PredictSummary(**result)
    return _predict_to(
        model, inputs, output, opts, out_format=out_format, session_config=cfg,
        no_upgrade=no_upgrade, stdin=stdin, stdout=stdout, progress=progress,
        temp_path=temp_path,
    )  # fmt: skip


def _job(
    model: Any, inputs: Any, output: Any, opts: PredictOptions, out_format: Any, cfg: Any,
    no_upgrade: bool, tmp: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The guarded child's work (module level, so a spawned child can import it)."""
    from modelforge.engine.isolate import progress

    return _predict_to(
        model, inputs, output, opts, out_format=out_format, session_config=cfg,
        no_upgrade=no_upgrade, progress=progress, temp_path=tmp,
    ).to_dict()  # fmt: skip


def _predict_to(
    model: str | os.PathLike[str],
    inputs: Any,
    output: str | None,
    opts: PredictOptions,
    *,
    out_format: str | None,
    session_config: SessionConfig | None,
    no_upgrade: bool,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    progress: Progress | None = None,
    temp_path: str | None = None,
) -> PredictSummary:
    from modelforge.data.writers import open_writer
    from modelforge.engine.runner import Runner
    from modelforge.engine.session import SessionConfig
    from modelforge.inference.model import load, open_session

    t0 = time.perf_counter()
    cfg = session_config or SessionConfig()
    out_path = None if output in (None, STDIO) else output
    json_default = "jsonl" if opts.data_json and not out_path else None
    ofmt = output_format(out_path, out_format or json_default)
    from modelforge.inference.same_file import refuse_output_is_input, refuse_stdio_on_inputs

    refuse_output_is_input(out_path, inputs)
    if not opts.data_json:
        refuse_stdio_on_inputs(out_path, inputs, stdin, stdout)
    with collect_warnings() as warnings:
        lm = load(model)
        session, upgraded = open_session(lm, cfg, no_upgrade)
        assert lm.schema is not None
        plan = make_plan(lm, inputs or None, opts, stdin)
        try:
            runner = Runner(
                session, lm.schema, outputs=opts.outputs, batch_size=opts.batch_size,
                whole=plan.mode == "whole",
            )  # fmt: skip
            if json_default and plan.mode == "whole":
                ofmt = "json"
            checked = check_planned_clashes(lm.schema, runner.outputs, plan.mapping.keep, ofmt)
            writer = open_writer(out_path, ofmt, stdout=stdout, temp_path=temp_path)
            writer.names_checked = checked
        except BaseException:
            plan.close()
            raise
        try:
            stats = run_plan(plan, runner, writer, progress=progress)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return PredictSummary(
        model=lm.location.to_dict(),
        inputs=plan.names,
        input_format=plan.fmt,
        output=out_path or "-",
        output_format=ofmt,
        rows=stats.rows,
        batches=stats.batches,
        runs=stats.runs,
        outputs=runner.outputs,
        columns=stats.columns,
        providers_requested=session.to_dict()["providers_requested"],
        providers_used=session.to_dict()["providers_used"],
        mapping=plan.mapping.to_dict(),
        upgraded_to_opset=upgraded,
        seconds=round(time.perf_counter() - t0, 4),
        mode=stats.mode,
        mode_reason=plan.reason if stats.mode == plan.mode else
        "the outputs are not one entry per row and all the rows ran in one batch",
        warnings=list(warnings),
    )  # fmt: skip
