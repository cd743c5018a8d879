"""Is it safe to merge requests of this model into one run? An empirical row-independence probe.

A symbolic first dimension says a model takes any number of rows, not that each output row
depends only on its own input row: ``x - ReduceMean(x, axis=0)``, a BatchNorm written with
reductions, Softmax/TopK/CumSum over axis 0 or attention across the batch all mix rows, and
merging two clients' requests would hand each an answer computed with the other's rows.

So before a version batches, :func:`rows_independent` synthesizes a few distinct rows, runs
them one by one and merged into one run, and compares the outputs row for row (floats within
a small tolerance). Any difference, a merged output without one row per input row, or a probe
that cannot run at all, means "do not batch this version" (``--batching on`` skips the probe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelforge.serve.models import OpenedVersion

PROBE_ROWS = 4
RTOL = 1e-3
ATOL = 1e-5


def rows_independent(opened: OpenedVersion) -> str | None:
    """None when merged runs give every row the answer it gets alone; else why not."""
    from modelforge.errors import ModelForgeError
    from modelforge.serve.models import synthesize_feeds

    try:
        feeds = synthesize_feeds(opened.schema, batch=PROBE_ROWS, seed=7)
    except ModelForgeError as exc:
        return f"its inputs cannot be synthesized for the probe ({exc.message})"
    try:
        merged = _outputs(opened, feeds)
        alone = [
            _outputs(opened, {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(PROBE_ROWS)
        ]
    except Exception as exc:  # onnxruntime raises pybind exception types
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return f"the probe run failed ({first[:200]})"
    for name, (array, labels) in merged.items():
        if array.ndim == 0 or array.shape[0] != PROBE_ROWS:
            return f"output '{name}' does not keep one row per input row"
        for i, single in enumerate(alone):
            one, one_labels = single[name]
            if one_labels != labels or not _same(array[i : i + 1], one):
                return (
                    f"output '{name}' of a row differs when other rows share the run "
                    "(the model mixes rows, e.g. a reduction over the first dimension)"
                )
    return None


def _outputs(opened: OpenedVersion, feeds: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    names = [p.name for p in opened.outputs]
    values = opened.run(0, names, feeds)
    ports = {p.name: p for p in opened.outputs}
    return {n: opened.flatten(ports[n], v) for n, v in zip(names, values, strict=True)}


def _same(a: Any, b: Any) -> bool:
    import numpy as np

    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        half = a.dtype.itemsize <= 2 or b.dtype.itemsize <= 2  # FP16 kernels differ more
        rtol, atol = (1e-2, 1e-3) if half else (RTOL, ATOL)
        return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
    return bool(np.array_equal(a, b))
