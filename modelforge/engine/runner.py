"""Running a Session on feeds: batches of rows (exact-size batches for fixed batch dims,
padding the last one) or one run on whole tensors; output conversion (ZipMap lists of
dicts -> 2-D arrays with keys; sequences, maps and optionals kept as they are);
``--outputs`` selection; a reader thread that overlaps parsing with inference."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelforge.data.batch import Batch, OutputValue
from modelforge.engine.session import translate_error
from modelforge.errors import DataError, UsageError
from modelforge.log import info
from modelforge.text import plural, safe

if TYPE_CHECKING:
    from modelforge.engine.session import Session
    from modelforge.model.schema import ModelSchema

DEFAULT_BATCH_SIZE = 10_000


def fixed_batch(schema: ModelSchema) -> int | None:
    """The batch size every input pins with a fixed first dimension, if any."""
    sizes = {
        s.shape[0]
        for s in schema.inputs
        if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0
    }
    if len(sizes) > 1:
        raise DataError(
            f"model inputs fix different batch sizes ({', '.join(map(str, sorted(sizes)))})",
            hint="this model cannot be fed in batches of rows",
            code="fixed_batch_conflict",
        )
    return sizes.pop() if sizes else None


def select_outputs(schema: ModelSchema, wanted: list[str] | None) -> list[str]:
    names = [o.name for o in schema.outputs]
    if not wanted:
        return names
    missing = [w for w in wanted if w not in names]
    if missing:
        raise UsageError(
            f"--outputs names {', '.join(safe(m) for m in missing)}, which the model does not "
            f"produce (outputs: {', '.join(safe(n) for n in names)})",
            hint="pick from the model's outputs",
            code="unknown_output",
        )
    return list(dict.fromkeys(wanted))


def to_output(name: str, value: Any, zipmap: bool = False) -> OutputValue:
    """onnxruntime's value for one output -> OutputValue. A ZipMap output (a list of dicts,
    ``zipmap``: declared seq(map(...))) becomes [N, K] + keys; a sequence of tensors stays a
    list of arrays, a map a dict, an empty optional None."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return OutputValue(name, value)
    if isinstance(value, list) and (
        (zipmap and not value) or (value and all(isinstance(v, dict) for v in value))
    ):
        keys = list(value[0].keys()) if value else []
        arr = np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
        return OutputValue(name, arr.reshape(len(value), len(keys)), keys)
    if isinstance(value, list):
        return OutputValue(name, [np.asarray(v) for v in value])
    if isinstance(value, dict) or value is None:
        return OutputValue(name, value)
    return OutputValue(name, np.asarray(value))


class Runner:
    """Runs one session. ``whole``: the model runs once on whole tensors (no row batches,
    no fixed-batch padding)."""

    def __init__(
        self,
        session: Session,
        schema: ModelSchema,
        *,
        outputs: list[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        whole: bool = False,
    ) -> None:
        if batch_size < 1:
            raise UsageError("--batch-size must be at least 1", code="invalid_option")
        self.session = session
        self.outputs = select_outputs(schema, outputs)
        self._zipmap = {o.name for o in schema.outputs if o.type.startswith("seq(map(")}
        self.fixed = None if whole else fixed_batch(schema)
        self.batch_size = self.fixed or batch_size
        self.runs = 0

    def _run(self, feeds: dict[str, Any], doing: str) -> list[OutputValue]:
        try:
            values = self.session.inner.run(self.outputs, feeds)
        except Exception as exc:  # onnxruntime raises pybind exception types
            raise translate_error(exc, doing) from None
        self.runs += 1
        return [
            to_output(n, v, n in self._zipmap) for n, v in zip(self.outputs, values, strict=True)
        ]

    def run_whole(self, feeds: dict[str, Any]) -> list[OutputValue]:
        """One run on the whole tensors."""
        return self._run(feeds, "running the model on the whole input tensors")

    def run(self, batch: Batch) -> list[OutputValue]:
        step = self.batch_size
        rows = batch.rows
        feeds_all = batch.feeds
        pad = (-rows) % self.fixed if self.fixed else 0
        if pad:  # only the last batch (see rebatch): repeat its last row, drop it below
            feeds_all = _pad(feeds_all, pad)
            info(
                f"the model needs batches of exactly {self.fixed} rows: padded the last "
                f"{plural(rows, 'row')} with {plural(pad, 'copy', 'copies')} of row "
                f"{batch.start + rows}; the padding's outputs are dropped"
            )
        total = rows + pad
        parts: list[list[OutputValue]] = []
        for lo in range(0, total, step):
            hi = min(total, lo + step)
            feeds = (
                feeds_all
                if (lo == 0 and hi == total)
                else {k: v[lo:hi] for k, v in feeds_all.items()}
            )
            first = batch.start + lo + 1
            last = batch.start + min(hi, rows)
            parts.append(self._run(feeds, f"running the model on rows {first}-{last}"))
        out = (
            parts[0]
            if len(parts) == 1
            else [_concat([p[i] for p in parts], rows) for i in range(len(self.outputs))]
        )
        return [_drop_padding(o, total, rows) for o in out] if pad else out


def _pad(feeds: dict[str, Any], pad: int) -> dict[str, Any]:
    import numpy as np

    return {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in feeds.items()}


def _drop_padding(out: OutputValue, total: int, rows: int) -> OutputValue:
    """Rows ``rows..total`` came from padding: slice them off per-row outputs (ZipMap lists
    are arrays by now, see to_output)."""
    if out.per_row(total):
        return OutputValue(out.name, out.value[:rows], out.keys)
    return out


def _concat(values: list[OutputValue], rows: int) -> OutputValue:
    """Join per-row outputs of the runs of one batch (others are left for the writer to
    refuse, with the first run's value)."""
    import numpy as np

    first = values[0]
    if not all(v.kind == "tensor" and v.value.ndim >= 1 for v in values):
        return first
    return OutputValue(first.name, np.concatenate([v.value for v in values]), first.keys)


def rebatch(batches: Iterator[Batch], multiple: int) -> Iterator[Batch]:
    """Regroup batches so that each holds a multiple of ``multiple`` rows (fixed batch dims);
    the remainder is carried into the next batch, row order unchanged."""
    with closing_iter(batches):
        yield from _rebatch(batches, multiple)


@contextlib.contextmanager
def closing_iter(it: Any) -> Iterator[Any]:
    """Close ``it`` on the way out when it can be closed (a generator; not a list iterator),
    so a source is released deterministically (Ctrl-C, errors), not by the GC later."""
    try:
        yield it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _rebatch(batches: Iterator[Batch], multiple: int) -> Iterator[Batch]:
    carry: Batch | None = None
    for b in batches:
        if carry is not None:
            b = _join(carry, b)
            carry = None
        cut = b.rows - b.rows % multiple
        if cut == b.rows:
            yield b
            continue
        head, tail = _split(b, cut)
        if head.rows:
            yield head
        carry = tail
    if carry is not None:
        yield carry


def split_batches(batches: Iterator[Batch], size: int) -> Iterator[Batch]:
    """Cut batches larger than ``size`` rows into pieces of ``size`` (the last one shorter),
    row order unchanged: ``iter_predict`` yields at most ``batch_size`` rows at a time
    whatever block size the reader parsed."""
    with closing_iter(batches):
        for b in batches:
            while b.rows > size:
                head, b = _split(b, size)
                yield head
            yield b


def _split(b: Batch, cut: int) -> tuple[Batch, Batch]:
    head = Batch(
        b.start,
        cut,
        {k: v[:cut] for k, v in b.feeds.items()},
        {k: v[:cut] for k, v in b.keep.items()},
        b.bytes_read,
    )
    tail = Batch(
        b.start + cut,
        b.rows - cut,
        {k: v[cut:] for k, v in b.feeds.items()},
        {k: v[cut:] for k, v in b.keep.items()},
        b.bytes_read,
    )
    return head, tail


def _join(a: Batch, b: Batch) -> Batch:
    import numpy as np

    keep: dict[str, Any] = {}
    for k in a.keep:
        x, y = a.keep[k], b.keep[k]
        keep[k] = (
            x.append(y)
            if hasattr(x, "append") and not isinstance(x, np.ndarray)
            else (np.concatenate([x, y]))
        )
    feeds = {k: np.concatenate([a.feeds[k], b.feeds[k]]) for k in a.feeds}
    return Batch(a.start, a.rows + b.rows, feeds, keep, b.bytes_read)


def put_until(q: queue.Queue[Any], item: Any, stop: threading.Event, step: float = 0.1) -> bool:
    """Put ``item`` on a bounded queue, waiting for room until ``stop`` is set (then False):
    a producer thread never blocks for ever behind a consumer that has gone."""
    while not stop.is_set():
        try:
            q.put(item, timeout=step)
            return True
        except queue.Full:
            continue
    return False


def prefetch(batches: Iterator[Batch], depth: int = 1) -> Iterator[Batch]:
    """Read/parse the next batch in a background thread while this one runs and is written
    (polars and onnxruntime release the GIL). Errors surface in order, where they happened."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        return put_until(q, item, stop)

    def work() -> None:
        try:
            for b in batches:
                if not put(("batch", b)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))
        finally:  # close the source here, in its own thread, deterministically
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="modelforge-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)
