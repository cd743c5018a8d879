"""The progress display behind :meth:`modelforge.render.Renderer.progress` (rich.progress).

Imported only when a display is actually shown (stderr is a terminal), so that rich's
progress machinery costs nothing on pipes, with ``--quiet`` or ``--json``.

Layout: a spinner, the description, then either a bar with percentage and ETA (total
known) or nothing more (total unknown), then the count and the rate in ``unit``/s. The
display is transient: it is erased when the block ends, on errors and Ctrl-C too, and the
cursor is shown again, so the shell prompt never ends up glued to a half-drawn line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class _Handle:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)

    def update(self, completed: int | None = None, total: int | None = None, **fields: Any) -> None:
        description = fields.pop("description", None)
        kwargs: dict[str, Any] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        if description is not None:
            kwargs["description"] = str(description)
        self._bar.update(self._task, **kwargs, **fields)


def _columns(unit: str) -> list[Any]:
    from rich.progress import (
        BarColumn,
        ProgressColumn,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _Known(ProgressColumn):
        """Render ``inner`` only while the task's total is known."""

        def __init__(self, inner: ProgressColumn) -> None:
            super().__init__()
            self.inner = inner

        def render(self, task: Any) -> Any:
            return self.inner.render(task) if task.total is not None else Text("")

    class _Count(ProgressColumn):
        def render(self, task: Any) -> Any:
            if task.total is None and not task.completed:
                return Text("")  # a bare spinner: nothing counted yet
            done = f"{int(task.completed):,}"
            if task.total is not None:
                done += f"/{int(task.total):,}"
            return Text(f"{done} {unit}")

    class _Rate(ProgressColumn):
        def render(self, task: Any) -> Any:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f} {unit}/s")

    return [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        _Known(BarColumn()),
        _Known(TaskProgressColumn()),
        _Count(),
        _Rate(),
        _Known(TimeRemainingColumn()),
    ]


@contextmanager
def live_progress(
    stream: TextIO, description: str, *, total: int | None, unit: str
) -> Iterator[tuple[Any, _Handle]]:
    """Show a transient progress display on ``stream`` (a terminal) during the block."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(
        file=stream,
        force_terminal=True,  # the caller checked isatty(); NO_COLOR only drops colours
        no_color=bool(os.environ.get("NO_COLOR")),
        highlight=False,
        emoji=False,
        markup=False,
    )
    bar = Progress(
        *_columns(unit),
        console=console,
        transient=True,
        redirect_stdout=False,  # stdout carries data (predictions): never captured
        redirect_stderr=False,
        refresh_per_second=8,
    )
    task = bar.add_task(description, total=total)
    bar.start()
    try:
        yield bar, _Handle(bar, task)
    finally:
        bar.stop()
