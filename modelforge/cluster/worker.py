"""What lives in a worker process: one onnxruntime session per model per process.

This module must stay importable on the workers (a function pickled from ``__main__``
carries its own globals, so its cache would be rebuilt for every task). Sessions cannot be
pickled; they are built here on first use, keyed by the model's sha256 and the session
settings, and shared by every thread of the process (``InferenceSession.run`` is
thread-safe; the lock only guards creation).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()
_SESSIONS: dict[str, Any] = {}
_CAPPED = False


def identity(blob: bytes) -> bytes:
    """The model's bytes as a task: ``client.submit(identity, blob)`` keeps them in the
    task's run spec, so the scheduler can recompute them if every holder dies."""
    return blob


def warm() -> bool:
    """Import what a part needs (onnxruntime, polars, pyarrow, the predict core) before the
    first part arrives: run on every worker while the client prepares the output."""
    import importlib

    for name in (
        "onnxruntime",
        "polars",
        "pyarrow.parquet",
        "modelforge.inference",
        "modelforge.data.tabular",
        "modelforge.data.writers",
        "modelforge.cluster.part",
    ):
        importlib.import_module(name)
    import numpy as np
    import pyarrow as pa

    # pyarrow's first pa.array() imports pandas (its pandas shim, when pandas is installed):
    # ~0.3 s, paid here at start-up rather than inside the worker's first part's writer
    pa.array(np.zeros(1, dtype=np.float32))
    return True


def has_bokeh() -> bool:
    """Run on the scheduler: whether it can serve the dashboard's pages."""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def host_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def intra_threads(host_threads: dict[str, int] | None, fallback: int | None) -> int | None:
    """onnxruntime intra-op threads for this process: host cores / task threads on the host
    (onnxruntime ignores OMP_NUM_THREADS and would size its pool to every core).

    In a worker, pyarrow's pools are capped to this process's share of the cores as well.
    Outside a Dask worker: ``fallback`` (the user's --threads; None = onnxruntime's own)."""
    worker = _current_worker()
    if worker is None:
        return fallback
    own = getattr(worker, "nthreads", None) or worker.state.nthreads
    on_host = (host_threads or {}).get(_host(worker.address)) or own
    share = max(1, host_cores() // max(1, on_host))  # this task's share of the host's cores
    cap_arrow_threads(share * own)
    return fallback or share


def in_dask_worker() -> bool:
    return _current_worker() is not None


def _current_worker() -> Any:
    if "distributed" not in sys.modules:  # not a Dask worker; do not import it here
        return None
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _host(address: str) -> str:
    rest = address.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0]


def cap_arrow_threads(threads: int) -> None:
    """pyarrow's pool sized to this worker's share of the host (once per process)."""
    global _CAPPED
    if _CAPPED:
        return
    import pyarrow as pa

    pa.set_cpu_count(max(1, threads))
    pa.set_io_thread_count(max(1, threads))
    _CAPPED = True


def cached(key: str, build: Callable[[], Any]) -> Any:
    """The value for ``key``, built once per process (under a lock)."""
    value = _SESSIONS.get(key)
    if value is not None:
        return value
    with _LOCK:
        value = _SESSIONS.get(key)
        if value is None:
            value = build()
            _SESSIONS[key] = value
    return value


_FOOTERS: dict[tuple[str, int, int], Any] = {}
FOOTERS_KEPT = 256


def footer(path: str) -> tuple[Any, int | None]:
    """The parsed footer of Parquet file ``path`` and its size, cached per process by
    (path, size, mtime): a worker running several parts of one file parses its footer
    once (~1 ms for 64 row groups x 20 columns, every part otherwise). ``(None, None)``
    when it cannot be read here: the reader then opens the file itself and names the
    problem."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    key = (path, st.st_size, st.st_mtime_ns)
    meta = _FOOTERS.get(key)
    if meta is None:
        import pyarrow.parquet as pq

        try:
            meta = pq.read_metadata(path)
            again = os.stat(path)
        except Exception:  # not Parquet, truncated, gone: the reader reports it
            return None, None
        if (again.st_size, again.st_mtime_ns) != key[1:]:  # changed while read
            return None, None
        with _LOCK:
            if len(_FOOTERS) >= FOOTERS_KEPT:
                _FOOTERS.clear()
            _FOOTERS[key] = meta
    return meta, st.st_size


_DIGESTS: dict[tuple[str, int, int], str] = {}


def footer_digest(path: str, st: os.stat_result) -> str:
    """sha256 of ``path``'s Parquet footer, cached by (path, size, mtime): each part checks
    its input against the plan, and a file of thousands of row groups has a footer of
    megabytes (hashing it twice a part tripled the time of 3,000 one-row parts)."""
    from modelforge.cluster.plan import footer_sha256

    key = (path, st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = footer_sha256(path, st.st_size)
        with _LOCK:
            if len(_DIGESTS) >= FOOTERS_KEPT:
                _DIGESTS.clear()
            _DIGESTS[key] = digest
    return digest


def cache_size() -> int:
    return len(_SESSIONS)


def session_configs() -> list[dict[str, Any]]:
    """The settings of this process's cached sessions (``SessionConfig.to_dict()``)."""
    return [value[0].config.to_dict() for value in list(_SESSIONS.values())]


def clear() -> None:
    with _LOCK:
        _SESSIONS.clear()
