"""``--loop-cpu N``: the server's Python threads on one CPU, onnxruntime's own threads free.

The event loop and the instance threads take turns on one GIL; on different CPUs every
hand-off between them is a cross-CPU wake-up. Measured on a 2-core VM with 32 clients (MLP,
1-row binary requests): pinned, 5,100–5,400 requests/s at 170–180 µs of server CPU and a
client p99 of 15–16 ms in every run; unpinned, 4,200–4,800 at 195–260 µs and 15–53 ms.
onnxruntime's intra-op pool threads are created with the sessions, by threads that are not
pinned (sessions created before pinning, or in loader threads that unpin themselves), so a
model's compute still spreads over every core. Linux only; off by default (a pinned loop
cannot move away from a CPU another process keeps busy).
"""

from __future__ import annotations

import os

_pinned: set[int] | None = None  # the CPU set of the Python threads, once pinned
_everything: set[int] | None = None  # the process's CPU set before pinning


def available() -> set[int] | None:
    """The CPUs this process may run on; None where affinity cannot be set."""
    getter = getattr(os, "sched_getaffinity", None)
    return set(getter(0)) if getter is not None else None


def pin_loop(cpu: int) -> None:
    """Pin the calling thread (the event loop); threads it starts later inherit the pin."""
    global _pinned, _everything
    _everything = available()
    _pinned = {cpu}
    os.sched_setaffinity(0, _pinned)


def pin_here() -> None:
    """An instance thread: on the loop's CPU (a no-op when not pinned)."""
    if _pinned is not None:
        os.sched_setaffinity(0, _pinned)


def unpin_here() -> None:
    """A loader thread, before it creates sessions: their onnxruntime threads inherit this
    thread's CPU set, which must be every CPU (a no-op when not pinned)."""
    if _everything is not None:
        os.sched_setaffinity(0, _everything)
