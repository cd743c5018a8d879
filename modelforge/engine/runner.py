"""Batched inference over a Session: exact-size batches for fixed batch dims, output
conversion (ZipMap lists of dicts -> 2-D arrays with keys), ``--outputs`` selection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelforge.data.batch import Batch
from modelforge.data.writers import OutputValue
from modelforge.engine.session import translate_error
from modelforge.errors import DataError, OutputError, UsageError
from modelforge.log import info
from modelforge.text import safe

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


def to_output(name: str, value: Any) -> OutputValue:
    """onnxruntime's value for one output -> OutputValue (ZipMap becomes [N, K] + keys)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return OutputValue(name, value)
    if isinstance(value, list) and (not value or isinstance(value[0], dict)):
        keys = list(value[0].keys()) if value else []
        arr = np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
        return OutputValue(name, arr.reshape(len(value), len(keys)), keys)
    raise OutputError(
        f"output '{safe(name)}' is a {type(value).__name__}, which cannot be written as rows",
        hint="select tensor outputs with --outputs",
        code="unsupported_output",
    )


class Runner:
    def __init__(
        self,
        session: Session,
        schema: ModelSchema,
        *,
        outputs: list[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise UsageError("--batch-size must be at least 1", code="invalid_option")
        self.session = session
        self.outputs = select_outputs(schema, outputs)
        self.fixed = fixed_batch(schema)
        self.batch_size = self.fixed or batch_size
        self.runs = 0

    def run(self, batch: Batch) -> list[OutputValue]:
        step = self.batch_size
        rows = batch.rows
        feeds_all = batch.feeds
        pad = (-rows) % self.fixed if self.fixed else 0
        if pad:  # only the last batch (see rebatch): repeat its last row, drop it below
            feeds_all = _pad(feeds_all, pad)
            info(
                f"the model needs batches of exactly {self.fixed} rows: padded the last "
                f"{rows} row{'s' if rows != 1 else ''} with {pad} "
                f"cop{'y' if pad == 1 else 'ies'} of row {batch.start + rows}; the padding's "
                "outputs are dropped"
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
            try:
                values = self.session.inner.run(self.outputs, feeds)
            except Exception as exc:  # onnxruntime raises pybind exception types
                first = batch.start + lo + 1
                last = batch.start + min(hi, rows)
                err = translate_error(exc, f"running the model on rows {first}-{last}")
                raise err from None
            self.runs += 1
            parts.append([to_output(n, v) for n, v in zip(self.outputs, values, strict=False)])
        out = (
            parts[0]
            if len(parts) == 1
            else [_concat([p[i] for p in parts]) for i in range(len(self.outputs))]
        )
        return [_drop_padding(o, total, rows) for o in out] if pad else out


def _pad(feeds: dict[str, Any], pad: int) -> dict[str, Any]:
    import numpy as np

    return {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in feeds.items()}


def _drop_padding(out: OutputValue, total: int, rows: int) -> OutputValue:
    """Rows ``rows..total`` came from padding: slice them off per-row outputs (ZipMap lists
    are arrays by now, see to_output)."""
    arr = out.array
    if arr.ndim >= 1 and arr.shape[0] == total:
        return OutputValue(out.name, arr[:rows], out.keys)
    return out


def _concat(values: list[OutputValue]) -> OutputValue:
    import numpy as np

    first = values[0]
    return OutputValue(first.name, np.concatenate([v.array for v in values]), first.keys)


def rebatch(batches: Iterator[Batch], multiple: int) -> Iterator[Batch]:
    """Regroup batches so that each holds a multiple of ``multiple`` rows (fixed batch dims);
    the remainder is carried into the next batch, row order unchanged."""
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


def prefetch(batches: Iterator[Batch], depth: int = 1) -> Iterator[Batch]:
    """Read/parse the next batch in a background thread while this one runs and is written
    (polars and onnxruntime release the GIL). Errors surface in order, where they happened."""
    import queue
    import threading

    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for b in batches:
                while not stop.is_set():
                    try:
                        q.put(("batch", b), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(("error", exc))

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
