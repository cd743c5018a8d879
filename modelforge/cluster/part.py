"""The ONE module where the cluster front calls the predict core: ``load`` /
``open_session`` (model), ``build_plan`` over a ``ParquetSource`` of the part's row groups,
the ``Runner``, the Parquet writer and ``run_plan``. A part runs exactly as local predict
does, on the part's row groups only, into its attempt file, renamed onto its final name.

Everything a part needs travels in a :class:`PartTask` (plain picklable data); the model's
bytes travel separately (a Dask task input) or are read from shared storage and checked
against the digest the client resolved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.cluster import worker
from modelforge.cluster.commit import file_sha256
from modelforge.cluster.plan import Part
from modelforge.errors import ArgumentError, DataError, InvalidModelError, ModelForgeError
from modelforge.text import safe

if TYPE_CHECKING:
    from modelforge.data.options import PredictOptions
    from modelforge.engine.session import SessionConfig
    from modelforge.inference import LoadedModel

INLINE_MB_ENV = "MODELFORGE_CLUSTER_INLINE_MB"


def inline_limit() -> int:
    """Models up to this size (default 512 MiB, ``$MODELFORGE_CLUSTER_INLINE_MB``) travel to
    workers as task input; larger ones and models with external data are read by the
    workers from shared storage (the same path) and checked by sha256."""
    return int(float(os.environ.get(INLINE_MB_ENV, "512")) * 1024 * 1024)


@dataclass(frozen=True)
class ModelSpec:
    digest: str  # sha256 of the model bytes, resolved once on the client
    location: dict[str, Any]  # ModelLocation.to_dict() on the client
    stored_columns: Any
    size: int
    inline: bool  # bytes are a task input (else read from location["path"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.location, "sha256": self.digest, "bytes": self.size,
                "transfer": "task input" if self.inline else "shared path"}  # fmt: skip


@dataclass(frozen=True)
class PartTask:
    part: Part
    model: ModelSpec
    options: PredictOptions
    session: SessionConfig
    no_upgrade: bool
    attempt_dir: str
    final_path: str
    host_threads: dict[str, int] | None = None  # Dask: task threads per host
    planned: tuple[int, str] | None = None  # the input's size and footer sha256 when planned


def job_options(options: Any, kw: dict[str, Any], session: Any) -> tuple[Any, Any]:
    """PredictOptions (``options`` with keyword overrides) and the SessionConfig."""
    from modelforge.data.options import PredictOptions
    from modelforge.engine.session import SessionConfig

    return PredictOptions.build(options, kw), session or SessionConfig()


def collect_warnings() -> contextlib.AbstractContextManager[list[str]]:
    """The core's warning collector (mapping warnings, upgrades) for the summary."""
    from modelforge.inference.core import collect_warnings as collect

    return collect()


def resolve(model: str | os.PathLike[str]) -> tuple[ModelSpec, LoadedModel]:
    """Resolve MODEL once (an alias moving later cannot split versions) and digest it."""
    from modelforge.inference import load

    lm = load(model, parse=True)
    external = _has_external_data(lm)
    digest = lm.opened.sha256
    loc = lm.location
    spec = ModelSpec(
        digest, loc.to_dict(), lm.stored_columns, len(lm.data),
        inline=not external and len(lm.data) <= inline_limit(),
    )  # fmt: skip
    return spec, lm


def _has_external_data(lm: LoadedModel) -> bool:
    from onnx.external_data_helper import uses_external_data

    proto = lm.parse()
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        tensors.extend(a.t for a in node.attribute if a.HasField("t"))
    return any(uses_external_data(t) for t in tensors)


def check_job(lm: LoadedModel, first_input: str, options: PredictOptions) -> list[str]:
    """Everything that can be refused before any work: the mapping of the inputs' columns,
    --outputs, --keep clashes. Returns the output columns planned (names only)."""
    from modelforge.data.plan import build_plan
    from modelforge.data.sources import ParquetSource
    from modelforge.engine.runner import select_outputs
    from modelforge.inference.core import check_planned_clashes

    assert lm.schema is not None
    from modelforge.data.tabular import check_readable

    source = ParquetSource(first_input)
    plan = build_plan([source], lm.schema, options, stored=lm.stored_columns)
    plan.close()
    used = [*plan.mapping.targets(), *plan.mapping.keep]
    check_readable(source.reader.file.schema_arrow, used, first_input)
    chosen = select_outputs(lm.schema, options.outputs)
    check_planned_clashes(lm.schema, chosen, plan.mapping.keep, "parquet")
    return chosen


def _loaded(spec: ModelSpec, blob: bytes | None) -> LoadedModel:
    """The client's model on this worker: the shipped bytes, or the shared path opened by
    the core's opener (:func:`modelforge.model.open.open_model`); either way its sha256
    must be the one the client resolved."""
    from modelforge.inference import LoadedModel
    from modelforge.model.open import OpenedModel, open_model, sha256_hex
    from modelforge.store.resolve import ModelLocation

    loc = spec.location
    location = ModelLocation(
        path=Path(loc["path"]), ref=loc["ref"], origin=loc["origin"], name=loc["name"],
        version=loc["version"], metadata={"columns": spec.stored_columns},
    )  # fmt: skip
    trusted = loc["origin"] == "store"  # store-owned external data may be hard links
    if blob is None:
        try:
            opened = open_model(location.path, trusted=trusted, expected_sha256=spec.digest)
        except InvalidModelError as err:
            if err.code != "sha256_mismatch":
                raise
            raise _changed(spec) from None
        return LoadedModel(location, opened)
    digest = sha256_hex(blob)
    if digest != spec.digest:
        raise _changed(spec)
    opened = OpenedModel(path=location.path.absolute(), data=blob, sha256=digest, trusted=trusted)
    if opened.may_reference_external_data:  # as open_model: external data checked first
        opened.parse()
    return LoadedModel(location, opened)


def _changed(spec: ModelSpec) -> InvalidModelError:
    return InvalidModelError(
        f"model '{safe(spec.location['path'])}' on this worker is not the one the client "
        f"resolved (sha256 {spec.digest[:12]})",
        hint="the model changed on shared storage during the run; rerun (same storage "
        "for client and workers)",
        code="model_changed",
    )


def _session(task: PartTask, blob: bytes | None) -> tuple[Any, Any]:
    from modelforge.inference.model import open_session

    threads = worker.intra_threads(task.host_threads, task.session.threads)
    cfg = dataclasses.replace(task.session, threads=threads)
    if worker.in_dask_worker():  # between parts, the cores go to Dask
        cfg = dataclasses.replace(cfg, spinning=False)
    key = f"{task.model.digest}|{cfg.to_dict()}|{task.no_upgrade}"

    def build() -> tuple[Any, Any]:
        lm = _loaded(task.model, blob)
        session, _ = open_session(lm, cfg, task.no_upgrade)
        return session, lm.schema

    return worker.cached(key, build)


WARM_BUDGET_S = 0.25  # the larger warm-up pass runs only if it should take less than this
WARM_BYTES = 64 << 20  # and holds at most this much input (wide rows: fewer of them)


def prewarm(task: PartTask, blob: bytes | None) -> dict[str, Any]:
    """Build this process's session and run the warm-up passes before the first part.

    Submitted as a task to every worker at start-up (after the model is shipped), so that
    it runs in the worker's executor thread, as the parts do: memory that thread allocates
    comes from its own malloc arena, which the warm-up grows and the parts then reuse (run
    on the event loop by ``Client.run``, it grew the wrong arena: measured, 2,200-2,800
    page faults in the first part and ~280 in the next ones against ~1,300 and 15-40).
    Errors come back as ``{"error": ...}``."""
    try:
        with _quiet():
            session, schema = _session(task, blob)
    except ModelForgeError as exc:
        return {"error": {"class": type(exc).__name__, **exc.to_dict()}}
    with _quiet():
        return {"warm_rows": _warm_pass(task, session, schema)}


def _warm_pass(task: PartTask, session: Any, schema: Any) -> int:
    """Real passes through a part's path (Parquet decode, mapping and casts, onnxruntime
    runs at the part's batch size, the Parquet writer), in memory, so that the first part
    finds this process's first-call costs (lazy initialisation, arena growth, page faults)
    paid. Its rows have the first input's schema but no user values (numbers 0, booleans
    false, strings empty): data that crashes the model or its worker must do so in a part,
    where it is retried and named.

    First one batch; then, if that was quick enough to stay within ``WARM_BUDGET_S``, as
    many rows as two of the reader's batches (capped at the part's rows), laid out in the
    first input's row-group size and at most ``WARM_BYTES`` of input, so that the reader's
    buffers reach their steady size too (one 10,000-row batch left ~1,700 extra page
    faults to the second part). Best effort:
    returns the rows of the larger pass run (0 when none could run; the parts then report
    any real problem)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from modelforge.data.sources import READ_ROWS

    opts = task.options
    try:
        with pq.ParquetFile(task.part.input) as pf:
            first = next(pf.iter_batches(batch_size=opts.batch_size), None)
            group_rows = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else 0
        if first is None or first.num_rows == 0:
            return 0
        table = pa.Table.from_batches([first])
        table = pa.table([_blank(c) for c in table.columns], schema=table.schema)
        t0 = time.perf_counter()
        rows = _blank_pass(task, session, schema, table, None)
        seconds = time.perf_counter() - t0
        want = min(task.part.rows, 2 * READ_ROWS, rows * WARM_BYTES // max(1, table.nbytes))
    except Exception:  # a warm-up only: the parts meet (and name) any real problem
        return 0
    if rows and want > rows and seconds * want / rows < WARM_BUDGET_S:
        try:
            big = pa.concat_tables([table] * -(-want // rows)).slice(0, want)
            rows = _blank_pass(task, session, schema, big, group_rows or None)
        except Exception:  # the first pass ran: its rows are the answer
            pass
    return rows


def _blank_pass(task: PartTask, session: Any, schema: Any, table: Any, group_rows: int | None
                ) -> int:  # fmt: skip
    import io

    import pyarrow.parquet as pq

    from modelforge.data.plan import build_plan
    from modelforge.data.sources import ParquetSource
    from modelforge.data.writers import open_writer
    from modelforge.engine.runner import Runner
    from modelforge.inference.core import run_plan

    opts = task.options
    src = io.BytesIO()
    # plain pages, as real data
    pq.write_table(table, src, use_dictionary=False, row_group_size=group_rows)
    src.seek(0)
    runner = Runner(session, schema, outputs=opts.outputs, batch_size=opts.batch_size)
    plan = build_plan([ParquetSource(src, task.part.input)], schema, opts,
                      stored=task.model.stored_columns)  # fmt: skip
    writer = open_writer(None, "parquet", stdout=io.BytesIO())
    stats = run_plan(plan, runner, writer)
    writer.close()
    return int(stats.rows)


def _blank(column: Any) -> Any:
    """The column with its type and length, its values replaced by 0 / false / ''
    (other types, e.g. lists or timestamps, keep their values)."""
    import pyarrow as pa

    t = column.type
    for test, value in ((pa.types.is_boolean, False), (pa.types.is_integer, 0),
                        (pa.types.is_floating, 0), (pa.types.is_string, ""),
                        (pa.types.is_large_string, "")):  # fmt: skip
        if test(t):
            return pa.nulls(len(column), t).fill_null(value)
    return column


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Mapping warnings were reported once by the client: not again for every part."""
    logger = logging.getLogger("modelforge")
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def run_part(task: PartTask, blob: bytes | None = None) -> dict[str, Any]:
    """Run one part; a ModelForgeError (data, model, usage: never worth a retry) comes back
    as ``{"error": ...}`` so it keeps its class, code and hint across the wire."""
    try:
        with _quiet():
            return _run(task, blob)
    except ModelForgeError as exc:
        return {"index": task.part.index, "error": {"class": type(exc).__name__, **exc.to_dict()}}


def _run(task: PartTask, blob: bytes | None) -> dict[str, Any]:
    from modelforge.data.plan import build_plan
    from modelforge.data.sources import ParquetSource
    from modelforge.data.writers import open_writer
    from modelforge.engine.runner import Runner
    from modelforge.inference.core import check_planned_clashes, run_plan

    t0 = time.perf_counter()
    part, opts = task.part, task.options
    _check_input(task)
    session, schema = _session(task, blob)
    runner = Runner(session, schema, outputs=opts.outputs, batch_size=opts.batch_size)
    meta, size = worker.footer(part.input)
    source = ParquetSource(part.input, row_groups=list(part.row_groups), size=size,
                           metadata=meta)  # fmt: skip
    plan = build_plan([source], schema, opts, stored=task.model.stored_columns)
    attempt = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = os.path.join(task.attempt_dir, f"{part.name[:-8]}.{attempt}.parquet")
    try:
        checked = check_planned_clashes(schema, runner.outputs, plan.mapping.keep, "parquet")
        writer = open_writer(task.final_path, "parquet", temp_path=tmp)
    except BaseException:
        plan.close()
        raise
    writer.names_checked = checked
    try:
        stats = run_plan(plan, runner, writer)
        if stats.rows != part.rows:
            raise DataError(
                f"{part.describe()} gave {stats.rows} rows, its footer says {part.rows}",
                hint="the input changed during the run; rerun", code="input_changed",
            )  # fmt: skip
        _check_input(task)  # not rewritten while this part read it
        writer.close()  # os.replace(attempt file -> part-NNNNNN.parquet): the commit
    except BaseException:
        writer.abort()
        raise
    return {
        "index": part.index, "rows": stats.rows, "bytes": os.path.getsize(task.final_path),
        "sha256": file_sha256(task.final_path),  # read back from the page cache: ~ms
        "attempt": attempt, "pid": os.getpid(), "runs": runner.runs, "columns": stats.columns,
        "providers_used": session.to_dict()["providers_used"],
        "intra_op_threads": session.config.threads,
        "seconds": round(time.perf_counter() - t0, 4),
    }  # fmt: skip


def _check_input(task: PartTask) -> None:
    """The part's input is still the file the client planned from (size and footer): a
    file rewritten during the run would otherwise give some parts old rows and others new
    ones under one _SUCCESS, when its row groups keep their sizes."""
    if task.planned is None:
        return
    path = task.part.input
    try:
        st = os.stat(path)
        same = st.st_size == task.planned[0] and worker.footer_digest(path, st) == task.planned[1]
    except (OSError, DataError):  # removed, truncated, no longer Parquet
        same = False
    if not same:
        raise DataError(
            f"{task.part.describe()}: the input changed or disappeared since the run was "
            "planned (its size or Parquet footer differs)",
            hint="let the inputs settle, then rerun into a new output folder",
            code="input_changed",
        )


def predict_record_batches(
    spec: ModelSpec,
    blob: bytes | None,
    options: PredictOptions,
    session: SessionConfig,
    no_upgrade: bool,
    batches: Iterator[Any],
) -> Iterator[Any]:
    """Arrow RecordBatches in, RecordBatches of predictions out (the ``mapInArrow``
    contract): each input batch goes through the frame reader, the runner and the Parquet
    writer of local predict, so columns, names and values are those of a part file."""
    import io

    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from modelforge.data.plan import build_plan
    from modelforge.data.sources import FrameSource
    from modelforge.data.writers import open_writer
    from modelforge.engine.runner import Runner
    from modelforge.inference.core import run_plan

    task = PartTask(Part(0, "<arrow>", (0,), 0, 0), spec, options, session, no_upgrade, "", "")
    sess, schema = _session(task, blob)
    runner = Runner(sess, schema, outputs=options.outputs, batch_size=options.batch_size)
    for n, rb in enumerate(batches, 1):
        if not isinstance(rb, pa.RecordBatch):
            raise ArgumentError(
                f"<Arrow batch {n}> must be a pyarrow RecordBatch, got {type(rb).__name__}",
                hint="mapInArrow passes an iterator of pyarrow.RecordBatch; for a Table, "
                "pass iter(table.to_batches())",
            )
        if rb.num_rows == 0:
            continue
        df = pl.from_arrow(rb)
        assert isinstance(df, pl.DataFrame)
        source = FrameSource(df, name=f"<Arrow batch {n}>")  # errors name the batch
        with _quiet():
            plan = build_plan([source], schema, options, stored=spec.stored_columns)
            buf = io.BytesIO()
            writer = open_writer(None, "parquet", stdout=buf)
            run_plan(plan, runner, writer)
            writer.close()
        yield from pq.read_table(io.BytesIO(buf.getvalue())).to_batches()
