"""Run part tasks: :class:`InProcess` here (no --cluster), or
:class:`modelforge.cluster.dask_executor.Dask` on Dask workers (``distributed`` futures;
imported only there and in :mod:`modelforge.cluster.dask_setup`, only for --cluster).

Both call :func:`modelforge.cluster.part.run_part`. A part that returns an error payload
(a ModelForgeError: data, model, usage) fails the job at once, is never retried, and names
the part and its input. With Dask, a worker that dies mid-part makes the scheduler rerun
the part elsewhere; a part that kills ``allowed-failures + 1`` workers ends the job with
an error naming it. Storage hiccups (``OSError``) are resubmitted up to ``OS_RETRIES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelforge.cluster.part import PartTask, run_part
from modelforge.errors import ModelForgeError, rebuild_error

OnDone = Callable[[dict[str, Any]], None]


@dataclass
class RunStats:
    workers: int = 1
    workers_lost: int = 0
    resubmitted: int = 0
    cluster: dict[str, Any] = field(default_factory=dict)


def part_error(task: PartTask, info: dict[str, Any]) -> ModelForgeError:
    err = rebuild_error(info)
    where = task.part.describe()
    if task.part.input not in err.message:
        err.message = f"{where}: {err.message}"
    err.details = {**err.details, "part": task.part.index, "input": task.part.input}
    return err


class InProcess:
    """Parts one after the other in this process, with one cached session."""

    kind = "in-process"

    def run(self, tasks: list[PartTask], blob: bytes, on_done: OnDone) -> RunStats:
        for task in tasks:
            res = run_part(task, blob)
            if "error" in res:
                raise part_error(task, res["error"])
            on_done(res)
        return RunStats(cluster=self.describe())

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "workers": 1}

    def host_threads(self) -> dict[str, int] | None:
        return None

    def close(self) -> None:
        pass
