"""Parts as Dask futures (``distributed``, imported only for --cluster): connect, check
versions, ship the model as a task input, warm every worker, run the parts and settle each
result. A worker that dies mid-part makes the scheduler rerun the part elsewhere; a part
that kills ``allowed-failures + 1`` workers ends the job with an error naming it; storage
hiccups (``OSError``) are resubmitted up to ``OS_RETRIES``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from modelforge.cluster.dask_setup import (
    MAX_LOCAL_PER_CORE,
    check_address,
    import_distributed,
    probe_scheduler,
    restore_environ,
    scheduler_file_address,
    spawn_environ,
)
from modelforge.cluster.executor import OnDone, RunStats, part_error
from modelforge.cluster.part import PartTask, run_part
from modelforge.cluster.worker import identity
from modelforge.errors import (
    InternalError,
    ResourceLimitError,
    RuntimeFailure,
    UsageError,
    rebuild_error,
)
from modelforge.text import escape, safe

CONNECT_TIMEOUT_S = float(os.environ.get("MODELFORGE_CLUSTER_CONNECT_TIMEOUT", "10"))
OS_RETRIES = 2
VERSION_PACKAGES = ("modelforge", "onnxruntime", "pyarrow", "polars", "numpy", "onnx")


class Dask:
    """Parts as Dask futures on a running scheduler, or on an embedded LocalCluster."""

    kind = "dask"

    def __init__(self, address: str) -> None:
        distributed = import_distributed()
        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.address = address
        self.local: Any = None
        self.client: Any = None
        self.lost: set[str] = set()
        self._tasks: dict[int, PartTask] = {}
        self._before: set[str] = set()
        self._model: Any = None  # the model's bytes as a task (ship)
        self._host_threads: dict[str, int] | None = None
        # Dask's nanny writes its workers' settings (OMP_NUM_THREADS=1, PYTHONHASHSEED, ...)
        # into this process's environment before spawning them: those keys are put back at
        # close (set by _local: only an embedded cluster spawns from this process)
        self._environ: dict[str, str | None] | None = None
        try:
            self.client = self._connect(distributed, address)
            self.seen: set[str] = set(self._workers())
        except BaseException:
            self.close()  # an embedded cluster started before the failure
            raise

    def _connect(self, distributed: Any, address: str) -> Any:
        target = address
        if address == "auto":
            target = os.environ.get("DASK_SCHEDULER_ADDRESS", "")
            if not target:
                raise UsageError("--cluster auto needs DASK_SCHEDULER_ADDRESS to be set",
                                 hint="export DASK_SCHEDULER_ADDRESS=tcp://HOST:8786",
                                 code="invalid_option")  # fmt: skip
        if target == "local" or target.startswith("local:"):
            return self._local(distributed, target)
        source = ""
        if "://" not in target and os.path.isfile(target):
            source = f" (from the scheduler file '{escape(target)}')"
            target = scheduler_file_address(target)
        check_address(target, address)
        probe_scheduler(target, CONNECT_TIMEOUT_S, source)
        try:
            return distributed.Client(
                address=target, timeout=CONNECT_TIMEOUT_S, set_as_default=False
            )
        except (OSError, TimeoutError) as exc:
            raise RuntimeFailure(
                f"cannot reach the Dask scheduler at '{escape(target)}'{source} within "
                f"{CONNECT_TIMEOUT_S:g} s: {safe(str(exc).splitlines()[0], 160)}",
                hint="check that the scheduler runs and the address/port is reachable",
                code="cluster_unreachable",
            ) from None

    def _local(self, distributed: Any, target: str) -> Any:
        from modelforge.cluster.worker import host_cores

        n_text = target.partition(":")[2]
        if n_text and not (n_text.isdigit() and int(n_text) > 0):
            raise UsageError(f"--cluster '{escape(target)}': N must be a positive number",
                             code="invalid_option")  # fmt: skip
        n = int(n_text) if n_text else host_cores()
        if n > MAX_LOCAL_PER_CORE * host_cores():  # each is a Python process with a session
            raise UsageError(
                f"--cluster '{escape(target)}' would start {n} worker processes on this "
                f"machine's {host_cores()} cores (at most {MAX_LOCAL_PER_CORE} per core)",
                hint="use local (one per core) or a smaller N; for more workers, start a "
                "scheduler and workers on several machines and pass tcp://HOST:PORT",
                code="invalid_option",
            )
        import importlib.util

        import dask

        share = str(max(1, host_cores() // n))  # workers x threads <= cores, for polars too
        env = {"POLARS_MAX_THREADS": share, "OMP_NUM_THREADS": "1"}
        self.has_board = importlib.util.find_spec("bokeh") is not None  # the dashboard needs it
        # one part waiting on a worker beyond its threads, so that a worker finishing a part
        # starts the next without a round trip to the scheduler (~2-3 ms a part, measured);
        # a death also counts against that waiting part: _culprit names the part that died
        settings: dict[str, Any] = {"distributed.scheduler.worker-saturation": 1.5}
        settings["distributed.nanny.pre-spawn-environ"] = spawn = spawn_environ(dask.config)
        keys = {*spawn, "PYTHONHASHSEED", "__DASK_PARENT_PID"}
        self._environ = {k: os.environ.get(k) for k in keys}
        with dask.config.set(settings):
            # the embedded cluster is ours: its own log lines (a heartbeat racing the shutdown)
            # are noise on the user's stderr; task failures still reach the client as errors
            try:
                self.local = distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=":0", silence_logs=logging.CRITICAL, env=env,
                )  # fmt: skip
            except RuntimeError as exc:  # "Nanny failed to start."
                raise RuntimeFailure(
                    f"--cluster '{escape(target)}': the embedded Dask cluster could not start "
                    f"its worker processes ({safe(str(exc), 120)})",
                    hint="from a Python script, call predict_partitioned under "
                    "'if __name__ == \"__main__\":' (workers re-import the script); "
                    "otherwise check memory and process limits",
                    code="cluster_start_failed",
                ) from exc
        return distributed.Client(self.local, set_as_default=False)

    def _workers(self) -> dict[str, Any]:
        info = self.client.scheduler_info(n_workers=-1)
        workers: dict[str, Any] = info.get("workers", {})
        return workers

    def check_versions(self) -> None:
        """Client, scheduler and workers must run the same software (before any work)."""
        try:
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeFailure(
                f"the Dask cluster at '{escape(self.address)}' has no workers "
                f"(waited {CONNECT_TIMEOUT_S:g} s)",
                hint="start workers: dask worker SCHEDULER_ADDRESS",
                code="cluster_no_workers",
            ) from None
        self.seen |= set(self._workers())
        versions = self.client.get_versions(packages=list(VERSION_PACKAGES))
        mine = versions["client"]["packages"]
        for addr, info in versions["workers"].items():
            theirs = (info or {}).get("packages", {})
            for pkg in ("python", "dask", "distributed", "cloudpickle", *VERSION_PACKAGES):
                if mine.get(pkg) != theirs.get(pkg):
                    raise RuntimeFailure(
                        f"worker {escape(addr)} runs {pkg} {theirs.get(pkg) or 'MISSING'}, "
                        f"this client {mine.get(pkg) or 'MISSING'}",
                        hint="install the same versions of modelforge and its dependencies on "
                        "every worker",
                        code="version_mismatch",
                    )
        from modelforge.cluster.worker import warm

        self.client.run(warm)  # imports, in parallel with the client's remaining set-up

    def ship(self, blob: bytes | None, digest: str) -> None:
        """Submit the model's bytes as a task (its run spec keeps them: the scheduler can
        recompute them if every holder dies) and wait until a worker holds them: part of
        the start-up, so that the first part starts without waiting for the model."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "large object in graph": the model, on purpose
            self._model = self.client.submit(
                identity, blob, key=f"modelforge-model-{digest[:16]}-{os.urandom(4).hex()}",
                pure=False,
            )  # fmt: skip
        self._model.exception()  # waits for this future (distributed.wait: a default client)

    def prewarm(self, task: PartTask) -> None:
        """Every worker builds its session and runs the warm-up passes now (start-up), not
        inside its first part: one task per worker, so that it runs in the executor thread
        the parts run in (see :func:`modelforge.cluster.part.prewarm`), with the shipped
        model as its input (which also copies the model to every worker). A worker that
        cannot (provider, model) stops the job, and so does a warm-up that killed every
        worker that ran it (Dask's ``KilledWorker``: its rows hold no user data, so the
        model itself crashes or exhausts a worker); one that fails otherwise (a worker lost
        once) is left to the parts, which retry and name any real problem."""
        from distributed.scheduler import KilledWorker

        from modelforge.cluster.part import prewarm

        tag = os.urandom(4).hex()
        futures = {}
        for n, addr in enumerate(self._workers()):
            futures[addr] = self.client.submit(
                prewarm, task, self._model, key=f"modelforge-prewarm-{n}-{tag}",
                workers=[addr], allow_other_workers=True, pure=False, retries=0,
            )  # fmt: skip
        for addr, fut in futures.items():
            try:
                res = fut.result()
            except KilledWorker as exc:  # not on to other workers: stop here
                self.client.cancel(list(futures.values()), force=True)
                raise ResourceLimitError(
                    "the model's warm-up on blank rows (numbers 0, booleans false, strings "
                    "empty) killed every worker that ran it "
                    f"({safe(str(exc).split('.')[0], 160)})",
                    hint="the model crashes onnxruntime or exhausts a worker's memory even on "
                    "blank input; check the workers' logs, and try it locally with "
                    "'modelforge validate MODEL'",
                    code="warmup_killed_workers",
                ) from None
            except Exception:  # best effort (a worker lost during the warm-up)
                continue
            if "error" in res:
                err = rebuild_error(res["error"])
                err.message = f"worker {escape(addr)}: {err.message}"
                raise err

    def host_threads(self) -> dict[str, int]:
        """Task threads per host, read once: the warm-up and the parts must size their
        sessions alike (a worker joining in between would change every session's cache key,
        and each worker would build a second session)."""
        if self._host_threads is None:
            per_host: dict[str, int] = {}
            for info in self._workers().values():
                host = str(info.get("host", ""))
                per_host[host] = per_host.get(host, 0) + int(info.get("nthreads", 1))
            self._host_threads = per_host
        return self._host_threads

    def dashboard(self) -> str | None:
        """The dashboard's link, when the scheduler serves one: its HTTP server (health,
        metrics) runs without bokeh too, but /status then answers 404."""
        from modelforge.cluster.worker import has_bokeh

        try:
            if not (self.has_board if self.local is not None
                    else self.client.run_on_scheduler(has_bokeh)):  # fmt: skip
                return None
            link = self.client.dashboard_link
        except Exception:  # no dashboard (bokeh not installed) or not reported
            return None
        return str(link) if link else None

    def describe(self) -> dict[str, Any]:
        return {"kind": "local" if self.local else "scheduler",
                "address": self.client.scheduler.address, "workers": len(self.seen)}  # fmt: skip

    def _poll_workers(self) -> None:
        now = set(self._workers())
        self.lost |= self.seen - now
        self.seen |= now

    def run(self, tasks: list[PartTask], blob: bytes, on_done: OnDone) -> RunStats:

        from distributed import as_completed

        token = os.urandom(4).hex()
        self._tasks = {t.part.index: t for t in tasks}
        self._before = set(os.listdir(tasks[0].attempt_dir))
        if self._model is None:
            self.ship(blob, tasks[0].model.digest)
        model = self._model
        by_key: dict[str, tuple[PartTask, int]] = {}
        pending: set[Any] = set()
        done_iter = as_completed(loop=self.client.loop)

        def submit(task: PartTask, tries: int) -> None:
            key = f"modelforge-part-{task.part.index:06d}-{token}-{tries}"
            fut = self.client.submit(run_part, task, model, key=key, pure=False, retries=0)
            by_key[fut.key] = (task, tries)
            pending.add(fut)
            done_iter.add(fut)

        for task in tasks:
            submit(task, 0)
        stats = RunStats(cluster=self.describe())
        last_poll = time.monotonic()
        try:
            for fut in done_iter:  # O(1) per completion (wait() on all pending is O(n))
                pending.discard(fut)
                task, tries = by_key.pop(fut.key)
                self._settle(fut, task, tries, submit, on_done, stats)
                if time.monotonic() - last_poll > 1.0:
                    self._poll_workers()
                    last_poll = time.monotonic()
        except BaseException:
            self.client.cancel([*pending, model], force=True)
            raise
        self._poll_workers()
        stats.workers_lost = len(self.lost)
        return stats

    def _settle(self, fut: Any, task: PartTask, tries: int, submit: Callable[..., None],
                on_done: OnDone, stats: RunStats) -> None:  # fmt: skip
        from distributed.scheduler import KilledWorker

        if fut.status == "finished":
            res = fut.result()
            if "error" in res:
                raise part_error(task, res["error"])
            on_done(res)
            return
        exc = fut.exception()
        if isinstance(exc, KilledWorker):
            task = self._culprit(task)
            raise ResourceLimitError(
                f"{task.part.describe()} killed every worker that ran it "
                f"({safe(str(exc).split('.')[0], 160)})",
                hint="the part crashes or exhausts its worker (memory limit, a crash in "
                "onnxruntime); check the workers' logs, give workers more memory or lower "
                "--batch-size; the other parts are intact, --resume reruns only the rest",
                code="part_killed_workers",
                details={"part": task.part.index, "input": task.part.input},
            )
        if isinstance(exc, OSError) and tries < OS_RETRIES:
            stats.resubmitted += 1
            submit(task, tries + 1)
            return
        if isinstance(exc, OSError):
            raise RuntimeFailure(
                f"{task.part.describe()} failed {tries + 1} times on storage: "
                f"{safe(str(exc), 160)}",
                hint="check that every worker sees the inputs and the output folder at the "
                "same paths (shared storage)",
                code="part_storage_error",
            )
        raise InternalError(f"{task.part.describe()} failed: {type(exc).__name__}: {exc}") from exc

    def _culprit(self, task: PartTask) -> PartTask:
        """Dask also counts a death against parts merely queued on the dying worker: blame
        the part whose attempts (files created when a part starts) died the most."""
        deaths: dict[int, int] = {}
        try:
            names = set(os.listdir(task.attempt_dir)) - self._before
        except OSError:
            return task
        for name in names:
            if name.startswith("part-") and name[5:11].isdigit():
                deaths[int(name[5:11])] = deaths.get(int(name[5:11]), 0) + 1
        if deaths.get(task.part.index) or not deaths:
            return task
        worst = max(deaths, key=lambda i: deaths[i])
        return self._tasks.get(worst, task)

    def close(self) -> None:
        try:
            if self.client is not None:
                self.client.close(timeout=10)
        finally:
            try:
                if self.local is not None:
                    self.local.close(timeout=10)
            finally:
                if self._environ is not None:
                    restore_environ(self._environ)
