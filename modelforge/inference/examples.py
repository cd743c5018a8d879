"""Recording golden examples (``models add --example DATA``): the first rows of DATA are
mapped onto the staged model exactly as predict maps data onto the stored version
(:func:`modelforge.inference.api.iter_feeds`), run through the public predict path, and
written with :mod:`modelforge.model.golden`; all of it in a guarded child process (the
model is untrusted) on the CPU provider. :func:`modelforge.api.add_model` hands
:func:`recorder` to the store's ``add_model``."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.errors import DataError
from modelforge.model.golden import first_rows, pack, sha256_file, write_npz
from modelforge.store.examples import (
    ENV_MAX_BYTES,
    EXAMPLES_FILE,
    MAX_EXAMPLE_BYTES,
    PROVIDER,
    check_rows,
    max_bytes,
)
from modelforge.text import human_bytes, safe

if TYPE_CHECKING:
    import numpy as np


def run_feeds(model: str, feeds: dict[str, np.ndarray], providers: list[str] | None = None) -> Any:
    """Run stored feeds (exact dtypes already) through the public predict API."""
    from modelforge.data.batch import OutputValue
    from modelforge.inference.api import iter_predict

    parts = list(iter_predict(model, dict(feeds), providers=providers or ["cpu"]))
    if len(parts) == 1:
        return parts[0].outputs
    import numpy as np

    return [
        OutputValue(o.name, np.concatenate([p.outputs[i].array for p in parts]), o.keys)
        for i, o in enumerate(parts[0].outputs)
    ]


def record_examples(
    model_path: str,
    data: list[str],
    columns: list[str] | None,
    rows: int,
    out_path: str,
    limit: int = MAX_EXAMPLE_BYTES,
) -> dict[str, Any]:
    """Entry point in the guarded child: map, run, write the NPZ; returns the manifest."""
    import onnxruntime

    from modelforge.inference.api import iter_feeds

    # mapped as predict maps data onto the stored version: ``columns`` is its column map
    feeds, got = first_rows(iter_feeds(model_path, data, stored_columns=columns), rows)
    if got == 0:
        raise DataError(
            f"--example {', '.join(safe(d) for d in data)} has no rows",
            hint="pass a data file with at least one row",
            code="no_rows",
        )
    outputs = run_feeds(model_path, feeds)
    arrays, ins, outs = pack(feeds, outputs)
    total = sum(a.nbytes for a in arrays.values())
    if total > limit:
        per_row = max(1, total // got)
        raise DataError(
            f"golden examples from {', '.join(safe(d) for d in data)} would take "
            f"{human_bytes(total)} for {got} rows, over the limit of {human_bytes(limit)}",
            hint=f"pass --example-rows {max(1, limit // per_row)} or fewer (or raise "
            f"{ENV_MAX_BYTES})",
            code="examples_too_large",
            details={"bytes": total, "rows": got, "limit": limit},
        )
    write_npz(Path(out_path), arrays)
    return {
        "rows": got,
        "sources": [os.fspath(d) for d in data],
        "onnxruntime": onnxruntime.__version__,
        "provider": PROVIDER,
        "inputs": ins,
        "outputs": outs,
    }


def stage_examples(
    staging_dir: Path,
    model_path: Path,
    data: str | os.PathLike[str] | list[str],
    *,
    rows: int,
    columns: list[str] | None,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
) -> dict[str, Any]:
    """Record golden examples into ``staging_dir/examples`` (guarded child); the record for
    ``meta["examples"]``."""
    from modelforge.engine.isolate import Limits, run_isolated

    check_rows(rows)
    sources = [os.fspath(d) for d in data] if isinstance(data, list) else [os.fspath(data)]
    out = staging_dir / EXAMPLES_FILE
    manifest = run_isolated(
        record_examples,
        os.fspath(model_path),
        sources,
        columns,
        rows,
        os.fspath(out),
        max_bytes(),  # read here: a forkserver child may predate the environment
        what="recording golden examples",
        limits=Limits.for_checks(timeout_s, memory_mb),
        cleanup=[out],
    )
    digest, size = sha256_file(out)
    return {
        "file": EXAMPLES_FILE,
        "sha256": digest,
        "size": size,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        **manifest,
    }


def recorder(
    data: str | os.PathLike[str] | list[str],
    *,
    rows: int,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
) -> Callable[[Path, Path, list[str] | None], dict[str, Any]]:
    """The ``examples`` callback of :func:`modelforge.store.add.add_model`."""
    check_rows(rows)

    def record(staging_dir: Path, model_path: Path, columns: list[str] | None) -> dict[str, Any]:
        return stage_examples(
            staging_dir,
            model_path,
            data,
            rows=rows,
            columns=columns,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )

    return record
