"""``predict_partitioned``: predict Parquet inputs into a folder of ordered parts, in this
process or on a Dask cluster, with an atomic ``_SUCCESS`` manifest and ``--resume``."""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelforge.cluster.commit import SUCCESS, OutputDir, prepare
from modelforge.cluster.dask_executor import Dask
from modelforge.cluster.dask_setup import import_distributed
from modelforge.cluster.executor import InProcess, RunStats
from modelforge.cluster.part import (
    ModelSpec,
    PartTask,
    check_job,
    collect_warnings,
    job_options,
    resolve,
)
from modelforge.cluster.plan import DEFAULT_PARTITION_ROWS, Plan, make_plan, with_identity
from modelforge.errors import UsageError, check_type


@dataclass(frozen=True)
class ClusterProgress:
    """One progress event: ``start`` (once, with the dashboard link), then ``part``."""

    event: str
    parts_done: int
    parts_total: int
    rows_done: int
    rows_total: int
    seconds: float
    dashboard: str | None = None


Progress = Callable[[ClusterProgress], None]


@dataclass(frozen=True)
class PartitionedSummary:
    output: str
    manifest: str
    plan_hash: str
    model: dict[str, Any]
    inputs: list[str]
    parts: int
    parts_run: int
    parts_resumed: int
    rows: int
    attempts: int
    workers: int
    workers_lost: int
    cluster: dict[str, Any]
    columns: list[str]
    providers_used: list[str]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # plan_s, start_s, run_s
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _identity_options(opts: Any, cfg: Any, no_upgrade: bool) -> dict[str, Any]:
    """What decides the parts' content: everything but thread counts and spinning."""
    read = {k: v for k, v in opts.__dict__.items() if k != "data_json"}
    session = cfg.to_dict()
    session.pop("threads", None)
    session.pop("spinning", None)
    return {**read, "session": session, "no_upgrade": no_upgrade}


def predict_partitioned(
    model: str | os.PathLike[str],
    inputs: list[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: Any = None,
    *,
    cluster: str | None = None,
    partition_rows: int | None = None,
    resume: bool = False,
    session_config: Any = None,
    no_upgrade: bool = False,
    progress: Progress | None = None,
    **kw: Any,
) -> PartitionedSummary:
    """Predict ``inputs`` (Parquet) into ``out_dir/part-NNNNNN.parquet`` + ``_SUCCESS``.

    ``cluster``: None (in this process), ``tcp://HOST:PORT``, a scheduler file, ``local``,
    ``local:N`` or ``auto`` ($DASK_SCHEDULER_ADDRESS). ``options``/``kw``: as for
    :func:`modelforge.predict_to`. Parts hold the same rows and values, in order, as one
    ``predict_to`` over the same inputs.
    """
    t0 = time.perf_counter()
    if isinstance(inputs, (str, os.PathLike)):  # one file, not a list of its characters
        inputs = [inputs]
    inputs = (
        list(inputs)
        if isinstance(inputs, (list, tuple)) or hasattr(inputs, "__next__")
        else [inputs]
    )
    for p in inputs:
        check_type(p, (str, os.PathLike), "inputs", "Parquet file paths (a path or a list)")
    check_type(out_dir, (str, os.PathLike), "out_dir", "a folder path")
    if cluster is not None:
        check_type(cluster, str, "cluster", "None, 'local', 'local:N', 'auto' or an address")
    rows = DEFAULT_PARTITION_ROWS if partition_rows is None else partition_rows
    if isinstance(rows, bool) or not isinstance(rows, numbers.Integral):
        raise UsageError(f"partition_rows must be a whole number of rows, not {rows!r}",
                         code="invalid_option")  # fmt: skip
    rows = int(rows)
    opts, cfg = job_options(options, kw, session_config)
    if opts.data_json is not None:
        raise UsageError("--data cannot be partitioned", hint="write it with -o FILE",
                         code="invalid_option")  # fmt: skip
    if cluster:
        import_distributed()  # the one-line "pip install 'modelforge[dask]'" error first
    with collect_warnings() as warnings:
        plan = make_plan([os.fspath(p) for p in inputs], rows, opts.fmt)
        spec, lm = resolve(model)
        check_job(lm, plan.inputs[0].path, opts)
    plan = with_identity(plan, spec.digest, _identity_options(opts, cfg, no_upgrade))
    job = _Job(plan, spec, lm.data if spec.inline else None, opts, cfg, no_upgrade, progress, t0)
    job.clock["plan_s"] = time.perf_counter() - t0
    executor: Any = Dask(cluster) if cluster else InProcess()
    try:
        if isinstance(executor, Dask):
            executor.check_versions()
            template = PartTask(plan.parts[0], spec, opts, cfg, no_upgrade, "", "",
                                executor.host_threads())  # fmt: skip
            executor.ship(job.blob, spec.digest)
            executor.prewarm(template)
        job.clock["start_s"] = time.perf_counter() - t0 - job.clock["plan_s"]
        return job.execute(executor, os.fspath(out_dir), resume, list(warnings))
    finally:
        executor.close()


@dataclass
class _Job:
    """One partitioned run after planning: submits the parts, records commits, reports."""

    plan: Plan
    spec: ModelSpec
    blob: bytes | None  # the model's bytes when they travel as task input
    opts: Any
    cfg: Any
    no_upgrade: bool
    progress: Progress | None
    t0: float
    clock: dict[str, float] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=lambda: {"parts": 0, "rows": 0})
    first: dict[str, Any] = field(default_factory=dict)  # from the first committed part

    def execute(self, executor: Any, out_dir: str, resume: bool, warnings: list[str]) -> Any:
        od = prepare(out_dir, self.plan, self.spec.to_dict(), resume)
        try:
            todo = [p for p in self.plan.parts if p.index not in od.committed]
            host_threads = executor.host_threads()
            planned = {f.path: (f.size, f.footer_sha256) for f in self.plan.inputs}
            tasks = [PartTask(p, self.spec, self.opts, self.cfg, self.no_upgrade,
                              str(od.temporary), od.final_path(p.index), host_threads,
                              planned[p.input])
                     for p in todo]  # fmt: skip
            self.done = {"parts": len(od.committed),
                         "rows": sum(self.plan.parts[i].rows for i in od.committed)}  # fmt: skip
            self.event("start", executor.dashboard() if isinstance(executor, Dask) else None)
            t_run = time.perf_counter()
            stats = (
                executor.run(tasks, self.blob, lambda r: self.on_done(od, r))
                if tasks
                else RunStats(cluster=executor.describe())
            )
            self.clock["run_s"] = time.perf_counter() - t_run
            attempts = len(todo) + stats.resubmitted + sum(od.attempts_left_over().values())
            od.finish()
        except BaseException:
            od.flush()
            raise
        finally:
            od.release()
        return self.summary(od, stats, len(todo), attempts, warnings)

    def event(self, kind: str, dashboard: str | None = None) -> None:
        if self.progress is not None:
            since = time.perf_counter() - self.t0
            parts, rows, total = len(self.plan.parts), self.done["rows"], self.plan.total_rows
            self.progress(
                ClusterProgress(kind, self.done["parts"], parts, rows, total, since, dashboard)
            )

    def on_done(self, od: OutputDir, res: dict[str, Any]) -> None:
        run = {"sha256": res["sha256"], "seconds": res["seconds"], "pid": res["pid"]}
        od.record(res["index"], res["bytes"], run)
        self.done["parts"] += 1
        self.done["rows"] += res["rows"]
        self.first.setdefault("columns", res["columns"])
        self.first.setdefault("providers", res["providers_used"])
        self.first.setdefault("threads", res["intra_op_threads"])
        self.event("part")

    def summary(self, od: OutputDir, stats: RunStats, ran: int, attempts: int,
                warnings: list[str]) -> PartitionedSummary:  # fmt: skip
        plan = self.plan
        cluster = {**stats.cluster, "intra_op_threads": self.first.get("threads")}
        return PartitionedSummary(
            output=str(od.root), manifest=str(od.root / SUCCESS), plan_hash=plan.plan_hash,
            model=self.spec.to_dict(), inputs=[f.path for f in plan.inputs],
            parts=len(plan.parts), parts_run=ran, parts_resumed=len(od.committed),
            rows=plan.total_rows, attempts=attempts,
            workers=int(stats.cluster.get("workers", 1)), workers_lost=stats.workers_lost,
            cluster=cluster, columns=self.first.get("columns") or _columns(od, plan),
            providers_used=self.first.get("providers", []),
            seconds=round(time.perf_counter() - self.t0, 4),
            timings={k: round(v, 4) for k, v in self.clock.items()}, warnings=warnings,
        )  # fmt: skip


def _columns(od: OutputDir, plan: Plan) -> list[str]:
    """The output columns when no part ran (every part kept by --resume): the first part's."""
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(od.final_path(plan.parts[0].index)).names)
    except Exception:  # a summary detail: the parts themselves were checked by prepare()
        return []
