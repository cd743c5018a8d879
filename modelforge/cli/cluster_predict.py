"""The partitioned branch of ``modelforge predict`` (-o OUT_DIR/, --cluster, --resume):
one call into :func:`modelforge.cluster.predict_partitioned`, progress and the summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
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


@dataclass(frozen=True)
class PartsArgs:
    """--cluster, --partition-rows, --resume: the partitioned run of ``predict``."""

    cluster: ClusterOpt = None
    partition_rows: PartitionRowsOpt = None
    resume: ResumeOpt = False

    def wanted(self, output: str | None) -> bool:
        """-o names a folder, or one of these options is given: the run writes parts."""
        from modelforge.cluster import wants_partitioned

        return wants_partitioned(
            output, cluster=self.cluster, partition_rows=self.partition_rows, resume=self.resume
        )

    def build(self) -> dict[str, Any]:
        """Keyword arguments of :func:`modelforge.cluster.predict_partitioned`."""
        return {
            "cluster": self.cluster,
            "partition_rows": self.partition_rows,
            "resume": self.resume,
        }


def _summary_line(out: Renderer, s: dict[str, Any]) -> None:
    """One line on stderr (stdout stays for data, as with predict -o FILE)."""
    from modelforge.text import safe

    resumed = f" ({s['parts_resumed']} kept from an earlier run)" if s["parts_resumed"] else ""
    out.info(
        f"{s['rows']:,} rows in {s['parts']} parts{resumed} -> {safe(s['output'])}/ "
        f"({s['seconds']:.2f} s, {s['workers']} worker{'s' if s['workers'] != 1 else ''}, "
        f"{s['attempts']} attempts, {s['workers_lost']} workers lost)"
    )


def _job(kw: dict[str, Any]) -> dict[str, Any]:
    """The partitioned run (module level: a spawned guarded child imports it); progress
    events reach the parent as dicts."""
    from modelforge.engine.isolate import progress

    return _run(kw, progress)


def _run(kw: dict[str, Any], show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import dataclasses

    from modelforge.cluster import predict_partitioned

    return predict_partitioned(progress=lambda p: show(dataclasses.asdict(p)), **kw).to_dict()


def predict_parts(out: Renderer, limits: Any, out_format: str | None = None, **kw: Any) -> None:
    """Run the partitioned predict and render it. An in-process run goes through the
    guarded child (under ``limits``); a --cluster run always runs here (its workers are
    separate processes already)."""
    import os

    from modelforge.engine.isolate import run_isolated
    from modelforge.errors import UsageError
    from modelforge.text import escape

    target = kw.get("out_dir")
    if not target or target == "-" or not (target.endswith(("/", os.sep)) or os.path.isdir(target)):
        raise UsageError(
            "--cluster, --partition-rows and --resume write a folder of parts",
            hint="name the folder with a trailing slash: -o predictions/",
            code="output_not_directory",
        )
    from modelforge.data.formats import normalize_format

    fmt = None if out_format is None else normalize_format(out_format, "--output-format")
    if fmt not in (None, "parquet"):  # the parts were silently Parquet anyway
        raise UsageError(
            f"a folder of parts is written as Parquet, not {escape(str(fmt))}",
            hint=f"drop --output-format, or write one file: -o predictions.{escape(str(fmt))}",
            code="invalid_option",
        )
    if kw.get("cluster") and getattr(limits, "timeout_s", None):
        out.warning(
            "--timeout does not apply with --cluster: the parts run in the workers' "
            "processes (use the workers' own limits, e.g. dask worker --memory-limit)"
        )
    with out.progress("predicting parts", unit="rows") as bar:

        def show(p: dict[str, Any]) -> None:
            if p["event"] == "start" and p.get("dashboard"):
                out.info(f"dashboard: {p['dashboard']}")
            parts = f"predicting parts {p['parts_done']:,}/{p['parts_total']:,}"
            bar.update(completed=p["rows_done"], total=p["rows_total"], description=parts)

        if kw.get("cluster"):
            summary = _run(kw, show)
        else:
            summary = run_isolated(
                _job, kw, what="predict", limits=limits, stdio="inherit", on_progress=show
            )
    out.warnings.extend(w for w in summary.get("warnings", []) if w not in out.warnings)
    if not out.json_mode:
        _summary_line(out, summary)
    out.emit(summary, None)
