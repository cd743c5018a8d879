"""Dynamic batching over N session instances, with onnxruntime off the event loop.

* A request that finds an idle instance runs at once (at the end of the event loop's
  current pass, so that requests decoded in the same pass share one hand-off to the
  instance thread and one run): a lone request never pays a window.
* Requests that arrive while every instance is busy queue up; when an instance frees, it
  takes the oldest queued request and every queued request with the same per-row shape and
  dtypes, up to ``max_batch`` rows in all (a request bigger than that runs alone), runs
  them as one ``session.run`` and hands each request exactly its own rows back, with its
  own requested outputs. ``delay`` (``--max-queue-delay``) lets a contended batch wait
  that long for more rows; it is never applied to a request that found an idle instance.
* If a merged run fails, or an output does not keep one row per input row, every request
  of that batch is re-run on its own: one bad request cannot fail or corrupt another.
* The queue is bounded (``max_queue``): past it, requests are refused (503, Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.serve.protocol import HttpError, unavailable

if TYPE_CHECKING:
    import numpy as np

    from modelforge.serve.models import OpenedVersion

Result = dict[str, tuple["np.ndarray", "list[Any] | None"]]


@dataclass
class Work:
    """One request's tensors on their way through the queue."""

    feeds: dict[str, np.ndarray]
    rows: int
    outputs: list[str]
    future: asyncio.Future[Result] | None = None
    enqueued_ns: int = 0
    contended: bool = False
    cancelled: bool = False
    queue_ns: int = 0
    infer_ns: int = 0
    batch_rows: int = 0
    key: tuple[Any, ...] = field(default=())
    # the HTTP layer's ``receive`` (resolves with ``http.disconnect`` if the client leaves),
    # watched by a task; None when the server calls :meth:`Batcher.gone` itself instead
    watch: Callable[[], Awaitable[Any]] | None = None
    started: bool = False
    gone: bool = False  # the client disconnected while the request waited or ran


def merge_key(feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
    key = tuple((k, v.dtype.str, v.shape[1:]) for k, v in feeds.items())
    if len({v.shape[0] if v.ndim else None for v in feeds.values()}) > 1:
        # inputs of different row counts (dims 0 named N and M): a merged run could not be
        # split back by rows, so such a request runs alone (a key equal to no other)
        return (*key, object())
    return key


class Load:
    """Requests inside any batcher of the server (queued or running), counted on the loop."""

    active = 0


class Batcher:
    def __init__(
        self,
        version: OpenedVersion,
        *,
        batching: bool,
        max_batch: int,
        delay_s: float,
        max_queue: int,
        on_batch: Callable[[int, int, int, int], None] | None = None,
        label: str = "",
        inline_us: int = 0,
        load: Load | None = None,
        colocate: bool = True,
    ) -> None:
        self.version = version
        self.batching = batching
        self.max_batch = max(1, max_batch)
        self.delay_s = delay_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.label = label
        n = len(version.sessions)
        self.free = list(range(n - 1, -1, -1))
        self.queue: deque[Work] = deque()
        self.threads = [_Instance(f"mf-infer-{label}-{i}", colocate) for i in range(n)]
        self.pending = 0  # queued + running requests
        self.closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.order = [p.name for p in version.outputs]
        self.inline_ns = inline_us * 1000
        self.load = load or Load()
        self._run_ns = 0.0  # moving averages of run time and rows, for the inline rule
        self._run_rows = 0.0
        self._pump_soon = False

    async def infer(self, work: Work, timeout: float | None) -> Result:
        if self.closed:
            raise unavailable(f"{self.label} is being unloaded; retry", 1)
        if len(self.queue) >= self.max_queue:
            raise unavailable(
                f"{self.label} has {len(self.queue)} requests queued (the --max-queue "
                "limit); retry later",
                1,
            )
        loop = asyncio.get_running_loop()
        work.future = loop.create_future()
        work.enqueued_ns = time.perf_counter_ns()
        work.contended = not self.free
        work.key = merge_key(work.feeds)
        self.pending += 1
        self.load.active += 1
        self._idle.clear()
        self.queue.append(work)
        try:
            if self.inline_ns:  # an inline run must see this request alone, now
                self._pump()
            elif not self._pump_soon:  # at the end of this loop pass: requests that
                self._pump_soon = True  # arrived together leave together, one hand-off
                loop.call_soon(self._pump_now)
        except BaseException:
            self.load.active -= 1
            raise
        fut = work.future
        timer = None if timeout is None else loop.call_later(timeout, self._expire, work, timeout)
        # an inline run is already done; anything else may wait or run long: watch the client
        watcher = None if fut.done() or work.watch is None else loop.create_task(self._watch(work))
        try:
            return await fut
        finally:
            self.load.active -= 1
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.cancel()
            if work.cancelled and work in self.queue:
                self.queue.remove(work)
                self._done(1)

    async def _watch(self, work: Work) -> None:
        """The client went away: a queued request is dropped before it runs (a running one
        finishes unseen); either way it does not count as a success."""
        assert work.watch is not None
        message = await work.watch()
        if message.get("type") == "http.disconnect":
            self.gone(work)

    def gone(self, work: Work) -> None:
        """The client of ``work`` disconnected (called on the loop)."""
        work.gone = True
        if not work.started and work.future is not None and not work.future.done():
            work.cancelled = True
            work.future.set_exception(
                HttpError(499, f"the client disconnected before {self.label} ran its request")
            )

    def _expire(self, work: Work, timeout: float) -> None:
        """The request timed out: answer 503 now; a run already started finishes unseen."""
        if work.future is not None and not work.future.done():
            work.cancelled = True
            work.future.set_exception(
                unavailable(
                    f"{self.label} did not answer within the {timeout:g} s request timeout", 1
                )
            )

    def _done(self, n: int) -> None:
        self.pending -= n
        if self.pending <= 0:
            self.pending = 0
            self._idle.set()

    def _take(self) -> list[Work]:
        while self.queue:
            first = self.queue.popleft()
            if not first.cancelled:
                break
            self._done(1)
        else:
            return []
        batch = [first]
        if self.batching and first.rows < self.max_batch:
            self._top_up(batch)
        return batch

    def _top_up(self, batch: list[Work]) -> None:
        rows = sum(w.rows for w in batch)
        key = batch[0].key
        keep: deque[Work] = deque()
        while self.queue:
            w = self.queue.popleft()
            if w.cancelled:
                self._done(1)
            elif w.key == key and rows + w.rows <= self.max_batch:
                batch.append(w)
                rows += w.rows
            else:
                keep.append(w)
        self.queue = keep

    def _pump_now(self) -> None:
        self._pump_soon = False
        self._pump()

    def _pump(self) -> None:
        while self.free and self.queue:
            batch = self._take()
            if not batch:
                return
            index = self.free.pop()
            rows = sum(w.rows for w in batch)
            wait = (
                self.batching and self.delay_s > 0 and batch[0].contended and rows < self.max_batch
            )
            loop = asyncio.get_running_loop()
            if wait:
                loop.call_later(self.delay_s, self._submit, loop, index, batch, True)
            else:
                self._submit(loop, index, batch, False)

    def _submit(
        self, loop: asyncio.AbstractEventLoop, index: int, batch: list[Work], top_up: bool
    ) -> None:
        """Hand a batch to the instance's thread; its completion comes back through
        ``call_soon_threadsafe`` (no task or future wrappers on the hot path)."""
        if top_up:
            self._top_up(batch)
        start = time.perf_counter_ns()
        for w in batch:
            w.queue_ns = start - w.enqueued_ns
            w.started = True

        if self._inline(batch):
            self._finish(index, batch, self._guarded(index, batch))
            return

        def work() -> None:
            outcome = self._guarded(index, batch)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to answer
                loop.call_soon_threadsafe(self._finish, index, batch, outcome)

        if not self.threads[index].submit(work):  # stopped (unloaded meanwhile)
            self._finish(index, batch, unavailable(f"{self.label} is being unloaded; retry", 1))

    def _guarded(
        self, index: int, batch: list[Work]
    ) -> list[Result | BaseException] | BaseException:
        """Run a batch on the loop or a thread alike: nothing it raises escapes, so the
        instance is always handed back by ``_finish``."""
        try:
            return self._run_batch(index, batch)
        except BaseException as exc:  # a bug: every waiting request gets it (500)
            return exc

    def _inline(self, batch: list[Work]) -> bool:
        """A lone request (nothing else queued or running anywhere in the server) for a model
        whose runs take under ``--inline-below`` µs runs on the event loop thread: the two
        thread wake-ups of a hand-off cost more than such a run, and there is nothing the
        loop could do meanwhile. Anything else goes to the instance threads (and batches)."""
        if not self.inline_ns or self.load.active > 1 or len(batch) != 1 or self.queue:
            return False
        if self._run_rows <= 0:
            return False  # not measured yet: the first run goes to a thread
        estimate = self._run_ns * max(1.0, batch[0].rows / self._run_rows)
        return estimate <= self.inline_ns

    def _measured(self, ns: int, rows: int) -> None:
        if self._run_rows <= 0:
            self._run_ns, self._run_rows = float(ns), float(rows)
        else:
            self._run_ns += 0.2 * (ns - self._run_ns)
            self._run_rows += 0.2 * (rows - self._run_rows)

    def _finish(
        self, index: int, batch: list[Work], outcome: list[Result | BaseException] | BaseException
    ) -> None:
        results = outcome if isinstance(outcome, list) else [outcome] * len(batch)
        try:
            for w, res in zip(batch, results, strict=True):
                fut = w.future
                if fut is None or fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
        finally:
            self._done(len(batch))
            self.free.append(index)
        if self.queue:
            self._pump()

    # -- in a worker thread --------------------------------------------------------------
    def _run_batch(self, index: int, batch: list[Work]) -> list[Result | BaseException]:
        if len(batch) == 1:
            return [self._run_one(index, batch[0])]
        try:
            return self._run_merged(index, batch)
        except Exception:
            return [self._run_one(index, w) for w in batch]

    def _names(self, batch: list[Work]) -> list[str]:
        wanted = {n for w in batch for n in w.outputs}
        return [n for n in self.order if n in wanted]

    def _run(self, index: int, names: list[str], feeds: dict[str, Any]) -> list[Any]:
        t0 = time.perf_counter_ns()
        values = self.version.run(index, names, feeds)
        first = next(iter(feeds.values()))
        self._measured(time.perf_counter_ns() - t0, int(first.shape[0]) if first.ndim else 1)
        return values

    def _run_one(self, index: int, w: Work) -> Result | BaseException:
        names = self._names([w])
        t0 = time.perf_counter_ns()
        try:
            values = self._run(index, names, w.feeds)
        except Exception as exc:  # onnxruntime raises pybind exception types
            return run_failure(exc)
        t1 = time.perf_counter_ns()
        w.infer_ns = t1 - t0
        w.batch_rows = w.rows
        ports = {p.name: p for p in self.version.outputs}
        out = {n: self.version.flatten(ports[n], v) for n, v in zip(names, values, strict=True)}
        if self.on_batch is not None:
            self.on_batch(w.rows, 0, t1 - t0, time.perf_counter_ns() - t1)
        return out

    def _run_merged(self, index: int, batch: list[Work]) -> list[Result | BaseException]:
        import numpy as np

        names = self._names(batch)
        total = sum(w.rows for w in batch)
        t_in = time.perf_counter_ns()
        feeds = {k: np.concatenate([w.feeds[k] for w in batch]) for k in batch[0].feeds}
        t0 = time.perf_counter_ns()
        values = self._run(index, names, feeds)
        t1 = time.perf_counter_ns()
        elapsed = t1 - t0
        ports = {p.name: p for p in self.version.outputs}
        flat = {n: self.version.flatten(ports[n], v) for n, v in zip(names, values, strict=True)}
        if any(a.ndim == 0 or a.shape[0] != total for a, _ in flat.values()):
            self.batching = False  # this model does not keep one output row per input row
            raise ValueError("outputs are not row-aligned")
        out: list[Result | BaseException] = []
        lo = 0
        for w in batch:
            hi = lo + w.rows
            w.infer_ns = elapsed
            w.batch_rows = total
            out.append({n: (flat[n][0][lo:hi], flat[n][1]) for n in w.outputs})
            lo = hi
        if self.on_batch is not None:
            self.on_batch(total, t0 - t_in, elapsed, time.perf_counter_ns() - t1)
        return out

    async def drain(self, timeout: float) -> bool:
        """Refuse new requests, wait for queued and running ones; True when all finished."""
        self.closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if not self.queue:
                for t in self.threads:
                    t.stop()


class _Instance:
    """The thread of one session instance: runs the jobs it is handed, one at a time.

    A plain thread on a ``SimpleQueue`` (a C queue: one lock hand-off per job) instead of a
    ``ThreadPoolExecutor`` (a Future, a work item, two locks and a semaphore per job): the
    hand-off is most of a small model's cost. Started on the first job.
    """

    __slots__ = ("name", "jobs", "thread", "stopped", "colocate")

    def __init__(self, name: str, colocate: bool = True) -> None:
        self.name = name
        self.colocate = colocate  # with a pinned loop: on its CPU, or free (long runs)
        self.jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.stopped = False

    def submit(self, job: Callable[[], None]) -> bool:
        if self.stopped:
            return False
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self.thread.start()
        self.jobs.put(job)
        return True

    def _loop(self) -> None:
        from modelforge.serve import affinity

        if self.colocate:  # --loop-cpu: next to the event loop it trades the GIL with
            affinity.pin_here()
        else:  # started by the pinned loop: it would inherit the pin
            affinity.unpin_here()
        get = self.jobs.get
        while (job := get()) is not None:
            job()

    def stop(self) -> None:
        """No new jobs; the thread ends after the ones already handed over."""
        if not self.stopped:
            self.stopped = True
            self.jobs.put(None)


def run_failure(exc: BaseException) -> HttpError:
    """onnxruntime failed on a request that passed the schema checks."""
    from modelforge.errors import ResourceLimitError
    from modelforge.serve.models import translate_run_error

    err = translate_run_error(exc, "running the model on this request")
    if isinstance(err, ResourceLimitError):
        return unavailable(str(err).splitlines()[0], 5)
    return HttpError(400, str(getattr(err, "message", err)))
