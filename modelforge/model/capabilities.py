"""What the installed onnxruntime accepts: maximum IR version and opset per domain.

onnxruntime has no API for this (onnxruntime#14932) and a hand-kept table goes stale with
every release, so ModelForge asks onnxruntime itself: it builds tiny Identity models stamped
with a candidate IR version or opset and tries to create a session, binary-searching for the
largest value accepted. The probes run once per onnxruntime version, in a guarded child
process (:mod:`modelforge.engine.isolate`), and the answer is cached as JSON in
``paths.cache_dir()`` (written atomically).

The *minimum* opset at which onnxruntime has kernels for a given op cannot be derived this
way (onnxruntime accepts opset 1 imports and fails only when it looks for a kernel); that
case is detected from the session-creation error (code ``opset_too_old``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelforge import paths

CACHE_SCHEMA_VERSION = 1
PROBE_DOMAINS = ("", "ai.onnx.ml", "com.microsoft")
_SEARCH_CEILING = 1024  # no real IR version or opset comes near this
_BASE_OPSET = 13  # any opset onnxruntime certainly accepts, for the ai.onnx Identity node
_BASE_IR = 7


@dataclass(frozen=True)
class RuntimeCapabilities:
    """Maxima the installed onnxruntime accepts; ``max_opset`` keyed by domain ("" = ai.onnx)."""

    onnxruntime_version: str
    max_ir_version: int
    max_opset: dict[str, int]

    def opset_limit(self, domain: str) -> int | None:
        return self.max_opset.get(canonical_domain(domain))

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnxruntime_version": self.onnxruntime_version,
            "max_ir_version": self.max_ir_version,
            "max_opset": {(k or "ai.onnx"): v for k, v in self.max_opset.items()},
        }


def canonical_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _identity_bytes(ir_version: int, opsets: dict[str, int]) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()]
    )
    model.ir_version = ir_version
    return bytes(model.SerializeToString())


def _accepts(ir_version: int, opsets: dict[str, int]) -> bool:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    model = _identity_bytes(ir_version, opsets)  # outside the try: a bug here must surface
    try:
        ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own pybind exception types: "not accepted"
        return False
    return True


def _largest(accepts: Any, low: int) -> int | None:
    """Largest n in [low, ceiling] with accepts(n), assuming acceptance is monotone."""
    if not accepts(low):
        return None
    lo, hi = low, _SEARCH_CEILING
    if accepts(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if accepts(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _probe() -> dict[str, Any]:
    """Runs in the guarded child: binary searches, a few dozen session creations."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    max_ir = _largest(lambda n: _accepts(n, {"": _BASE_OPSET}), _BASE_IR) or 0
    ir = min(max_ir, 10) if max_ir else _BASE_IR
    maxima: dict[str, int] = {}
    for domain in PROBE_DOMAINS:
        if domain == "":
            found = _largest(lambda n: _accepts(ir, {"": n}), _BASE_OPSET)
        else:
            found = _largest(lambda n, d=domain: _accepts(ir, {"": _BASE_OPSET, d: n}), 1)
        if found is not None:
            maxima[domain] = found
    return {"max_ir_version": max_ir, "max_opset": maxima}


def _ort_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    import onnxruntime as ort

    return str(ort.__version__)


def cache_path(ort_version: str) -> Path:
    safe_version = "".join(c if c.isalnum() or c in ".-+" else "_" for c in ort_version)
    return paths.cache_dir() / f"onnxruntime-capabilities-{safe_version}.json"


def _read_cache(path: os.PathLike[str], ort_version: str) -> RuntimeCapabilities | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if data.get("schema_version") != CACHE_SCHEMA_VERSION:
            return None
        if data.get("onnxruntime_version") != ort_version:
            return None
        return RuntimeCapabilities(
            onnxruntime_version=ort_version,
            max_ir_version=int(data["max_ir_version"]),
            max_opset={str(k): int(v) for k, v in data["max_opset"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: probe again


def _write_cache(path: os.PathLike[str], caps: RuntimeCapabilities) -> None:
    folder = os.path.dirname(os.fspath(path))
    data = {
        "schema_version": CACHE_SCHEMA_VERSION,
        "onnxruntime_version": caps.onnxruntime_version,
        "max_ir_version": caps.max_ir_version,
        "max_opset": caps.max_opset,
    }
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".caps-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # the cache is an optimisation; an unwritable cache dir only costs a re-probe


def runtime_capabilities(*, refresh: bool = False) -> RuntimeCapabilities:
    """Maxima for the installed onnxruntime, probed once per version and cached."""
    ort_version = _ort_version()
    path = cache_path(ort_version)
    if not refresh:
        cached = _read_cache(path, ort_version)
        if cached is not None:
            return cached
    from modelforge.engine.isolate import Limits, in_child, run_isolated

    if in_child():  # already guarded: probe here instead of nesting another child
        found = _probe()
    else:
        found = run_isolated(
            _probe,
            limits=Limits.for_checks(timeout_s=60),
            what="probing the installed onnxruntime's opset support",
        )
    caps = RuntimeCapabilities(
        onnxruntime_version=ort_version,
        max_ir_version=int(found["max_ir_version"]),
        max_opset={str(k): int(v) for k, v in found["max_opset"].items()},
    )
    _write_cache(path, caps)
    return caps
