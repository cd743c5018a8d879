"""Partitioned and distributed batch predict (``modelforge predict ... -o OUT_DIR/``).

- ``plan``: parts from the inputs' Parquet footers, the plan hash;
- ``commit``: ``_temporary/`` attempts, atomic rename, ``_SUCCESS`` manifest, resume;
- ``part``: one part through the predict core (the only module that calls it);
- ``worker``: the per-process session cache (importable on Dask workers);
- ``executor``: the in-process executor; ``dask_executor``: Dask futures, ``dask_setup``:
  addresses and the embedded cluster's environment (``distributed`` is imported only there);
- ``run``: :func:`predict_partitioned`, the one entry point.

Nothing here is imported by ``modelforge --help`` or plain ``predict``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ClusterProgress", "PartitionedSummary", "predict_partitioned", "wants_partitioned"]


def wants_partitioned(output: str | None, *, cluster: str | None = None,
                      partition_rows: int | None = None, resume: bool = False) -> bool:  # fmt: skip
    """-o names a folder (trailing slash or an existing directory), or a cluster option is
    given: the run writes parts."""
    import os

    if output not in (None, "-") and (output.endswith(("/", os.sep)) or os.path.isdir(output)):
        return True
    return bool(cluster or partition_rows is not None or resume)


def __getattr__(name: str) -> Any:
    if name in ("predict_partitioned", "PartitionedSummary", "ClusterProgress"):
        from modelforge.cluster import run

        return getattr(run, name)
    raise AttributeError(name)
