"""What a benchmark ran on: versions, CPU, load; reported with every result."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from typing import Any


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what the platform module says."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                names = ("model name", "Processor", "cpu model", "Model")
                if sep and key.strip() in names and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Environment:
    onnxruntime: str
    onnx: str | None
    numpy: str | None
    python: str
    platform: str
    cpu_model: str
    logical_cpus: int | None
    usable_cpus: int | None
    load_average: tuple[float, float, float] | None
    available_providers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnxruntime": self.onnxruntime,
            "onnx": self.onnx,
            "numpy": self.numpy,
            "python": self.python,
            "platform": self.platform,
            "cpu_model": self.cpu_model,
            "logical_cpus": self.logical_cpus,
            "usable_cpus": self.usable_cpus,
            "load_average": None if self.load_average is None else list(self.load_average),
            "available_providers": list(self.available_providers),
        }


def environment() -> Environment:
    import onnxruntime as ort

    try:
        load: tuple[float, float, float] | None = tuple(  # type: ignore[assignment]
            round(x, 2) for x in os.getloadavg()
        )
    except (AttributeError, OSError):
        load = None
    return Environment(
        onnxruntime=ort.__version__,
        onnx=_version("onnx"),
        numpy=_version("numpy"),
        python=platform.python_version() + f" ({sys.implementation.name})",
        platform=platform.platform(),
        cpu_model=cpu_model(),
        logical_cpus=os.cpu_count(),
        usable_cpus=_usable_cpus(),
        load_average=load,
        available_providers=tuple(ort.get_available_providers()),
    )
