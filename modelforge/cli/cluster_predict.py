"""The partitioned branch of ``modelforge predict`` (-o OUT_DIR/, --cluster, --resume):
one call into :func:`modelforge.cluster.predict_partitioned`, progress and the summary."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from modelforge.cluster import ClusterProgress
    from modelforge.render import Renderer

ClusterOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        metavar="ADDR",
        help="Run parts on Dask: tcp://HOST:PORT, a scheduler file, local, local:N or auto "
        "($DASK_SCHEDULER_ADDRESS). Needs modelforge[dask]; -o must be a folder.",
    ),
]
PartitionRowsOpt = Annotated[
    int | None,
    typer.Option(
        "--partition-rows",
        metavar="N",
        help="Rows per output part, packed from Parquet row groups (default 1000000).",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume", help="Keep the parts an identical earlier run committed; run the rest."
    ),
]


class _PartsProgress:
    """parts and rows done, rows/s, ETA (rows from the footers) and the dashboard link once,
    on stderr, redrawn at most 5 times a second."""

    def __init__(self, out: Renderer, bar: bool) -> None:
        self.out = out
        self.bar = bar
        self.last = 0.0

    def __call__(self, p: ClusterProgress) -> None:
        if p.event == "start":
            if p.dashboard:
                self.out.info(f"dashboard: {p.dashboard}")
            self.t0 = time.monotonic()
            self.rows0 = p.rows_done
            return
        now = time.monotonic()
        if not self.bar or (now - self.last < 0.2 and p.parts_done < p.parts_total):
            return
        self.last = now
        rate = (p.rows_done - self.rows0) / max(now - self.t0, 1e-9)
        eta = (p.rows_total - p.rows_done) / rate if rate > 0 else 0.0
        self.out.progress(
            f"{p.parts_done}/{p.parts_total} parts, {p.rows_done:,}/{p.rows_total:,} rows, "
            f"{rate:,.0f} rows/s, ETA {eta:.0f} s"
        )

    def done(self) -> None:
        if self.last:
            self.out.progress("")


def _summary_line(out: Renderer, s: dict[str, Any]) -> None:
    """One line on stderr (stdout stays for data, as with predict -o FILE)."""
    resumed = f" ({s['parts_resumed']} kept from an earlier run)" if s["parts_resumed"] else ""
    out.info(
        f"{s['rows']:,} rows in {s['parts']} parts{resumed} -> {s['output']}/ "
        f"({s['seconds']:.2f} s, {s['workers']} worker{'s' if s['workers'] != 1 else ''}, "
        f"{s['attempts']} attempts, {s['workers_lost']} workers lost)"
    )


def predict_parts(out: Renderer, quiet: bool, guard: Any, **kw: Any) -> None:
    """Run the partitioned predict and render it. ``guard``: the forked-child runner for
    in-process runs (None: run here); a --cluster run always runs here (its workers are
    separate processes already)."""
    import os

    from modelforge.cluster import predict_partitioned
    from modelforge.errors import UsageError

    target = kw.get("out_dir")
    if not target or target == "-" or not (target.endswith(("/", os.sep)) or os.path.isdir(target)):
        raise UsageError(
            "--cluster, --partition-rows and --resume write a folder of parts",
            hint="name the folder with a trailing slash: -o predictions/",
            code="output_not_directory",
        )
    bar = _PartsProgress(out, out.stderr_is_terminal and not quiet)

    def job() -> dict[str, Any]:
        try:
            return predict_partitioned(progress=bar, **kw).to_dict()
        finally:
            bar.done()  # in the process that drew it (a forked child for in-process runs)

    summary = guard(job) if guard is not None and not kw.get("cluster") else job()
    out.warnings.extend(w for w in summary.get("warnings", []) if w not in out.warnings)
    if not out.json_mode:
        _summary_line(out, summary)
    out.emit(summary, None)
