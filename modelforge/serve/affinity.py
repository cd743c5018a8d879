"""``--loop-cpu``: the server's Python threads on one CPU, onnxruntime's own threads free.

The event loop and the instance threads take turns on one GIL; on different CPUs every
hand-off between them is a cross-CPU wake-up, which costs far more than the hand-off on a
virtual machine (measured on the 2-core VM: a SimpleQueue job and its
``call_soon_threadsafe`` answer, 50 µs of CPU across CPUs, 7 µs on one). onnxruntime's
intra-op pool threads are created with the sessions, by threads that are not pinned
(sessions created before pinning, or in loader threads that unpin themselves), so a model's
compute still spreads over every core. Linux only.

* ``--loop-cpu N`` pins them to CPU N for good.
* ``--loop-cpu auto`` starts on the CPU the loop runs on and moves when another program
  keeps that CPU busy: every second, :class:`Mover` reads the CPUs' busy time
  (``/proc/stat``) and the pinned threads' own CPU time (``/proc/self/task``). When others
  used over :data:`CROWDED` of the pinned CPU and another CPU was idle for clearly longer
  than they left free, every thread pinned there moves to the idlest CPU. The server's own
  load never moves it, so it does not chase itself between CPUs.
"""

from __future__ import annotations

import os
import threading

_pinned: set[int] | None = None  # the CPU set of the Python threads, once pinned
_everything: set[int] | None = None  # the process's CPU set before pinning
_lock = threading.Lock()

CROWDED = 0.3  # the share of the pinned CPU that other programs may use before a move
MARGIN = 0.1  # how much more free time another CPU must offer than the pinned one leaves


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
    with _lock:
        if _pinned is not None:
            os.sched_setaffinity(0, _pinned)


def unpin_here() -> None:
    """A loader thread, before it creates sessions: their onnxruntime threads inherit this
    thread's CPU set, which must be every CPU (a no-op when not pinned)."""
    if _everything is not None:
        os.sched_setaffinity(0, _everything)


def current_cpu() -> int | None:
    """The CPU the calling thread last ran on (``/proc/thread-self/stat``, field 39)."""
    try:
        with open("/proc/thread-self/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_ticks() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) clock ticks since boot."""
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/stat") as fh:
        for line in fh:
            if not line.startswith("cpu") or line[3] == " ":
                continue
            name, *fields = line.split()
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            total = sum(ticks)
            out[int(name[3:])] = (total - ticks[3] - ticks[4], total)
    return out


def _pinned_threads(cpu: int) -> dict[int, int]:
    """The process's threads pinned to ``cpu``, with their CPU ticks (user + system)."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc/self/task"):
        tid = int(entry)
        try:
            if os.sched_getaffinity(tid) != {cpu}:
                continue
            with open(f"/proc/self/task/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[tid] = int(fields[11]) + int(fields[12])
    return out


def choose(idle: dict[int, float], here: int, others: float) -> int | None:
    """Where the pinned threads should go, or None to stay: ``idle`` is each CPU's idle
    share over the last interval, ``others`` the share of CPU ``here`` that other threads
    and programs used (the pinned threads' own use left out)."""
    rest = [c for c in idle if c != here]
    if not rest or others <= CROWDED:
        return None
    best = max(rest, key=lambda c: (idle[c], -c))
    if idle[best] <= (1.0 - others) + MARGIN:
        return None  # here they still get more than the idlest other CPU would give
    return best


class Mover:
    """``--loop-cpu auto``: keep the Python threads on one CPU, the least crowded one."""

    def __init__(self) -> None:
        cpus = available() or set()
        here = current_cpu()
        self.cpu = here if here in cpus else min(cpus)
        self.allowed = cpus
        self.moves = 0
        pin_loop(self.cpu)
        self._last = self._sample()

    def _sample(self) -> tuple[dict[int, tuple[int, int]], int]:
        return _cpu_ticks(), sum(_pinned_threads(self.cpu).values())

    def check(self) -> int | None:
        """Called about once a second on the loop; returns the new CPU after a move."""
        global _pinned
        try:
            cpus, ours = self._sample()
        except OSError:
            return None
        before, ours_before = self._last
        self._last = (cpus, ours)
        idle: dict[int, float] = {}
        for cpu in self.allowed & cpus.keys() & before.keys():
            busy = cpus[cpu][0] - before[cpu][0]
            total = cpus[cpu][1] - before[cpu][1]
            if total > 0:
                idle[cpu] = 1.0 - busy / total
        if self.cpu not in idle or len(idle) < 2:
            return None
        total = cpus[self.cpu][1] - before[self.cpu][1]
        others = (1.0 - idle[self.cpu]) - max(0, ours - ours_before) / total
        best = choose(idle, self.cpu, others)
        if best is None:
            return None
        with _lock:  # threads starting now pin themselves to the new CPU
            old, self.cpu = self.cpu, best
            _pinned = {best}
            for tid in _pinned_threads(old):
                try:
                    os.sched_setaffinity(tid, _pinned)
                except OSError:
                    continue
        self.moves += 1
        self._last = self._sample()
        return best
