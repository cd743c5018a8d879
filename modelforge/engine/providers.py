"""Execution-provider names: the one table mapping short names to onnxruntime's names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelforge.errors import ProviderUnavailableError, UsageError
from modelforge.text import escape

SHORT_NAMES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "onednn": "DnnlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider",
    "cann": "CANNExecutionProvider",
    "vitisai": "VitisAIExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
    "azure": "AzureExecutionProvider",
}

# onnxruntime's Python binding builds the CPU provider from the session options alone and
# drops every provider option given to it; the settings it has are --threads/--opt-level
NO_PROVIDER_OPTIONS = {"CPUExecutionProvider"}


def short_name(full: str) -> str:
    for short, name in SHORT_NAMES.items():
        if name == full:
            return short
    return full


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def canonical(name: str) -> str:
    """Map a short or full provider name to onnxruntime's full name (case-insensitive)."""
    key = name.strip()
    if key.lower() in SHORT_NAMES:
        return SHORT_NAMES[key.lower()]
    for full in set(SHORT_NAMES.values()):
        if full.lower() == key.lower() or full.lower() == key.lower() + "executionprovider":
            return full
    if key.endswith("ExecutionProvider"):
        return key
    raise UsageError(
        f"unknown execution provider '{escape(name)}'",
        hint="known short names: " + ", ".join(sorted(SHORT_NAMES)),
        code="unknown_provider",
    )


@dataclass(frozen=True)
class ProviderPlan:
    """Providers to ask onnxruntime for, in priority order, with their options."""

    requested: list[str]  # full names the user asked for, in order
    providers: list[str]  # what will be passed to onnxruntime
    options: list[dict[str, str]]
    missing: list[str]  # requested but not in this build (only with fallback)

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "providers": self.providers, "missing": self.missing}


def plan_providers(
    names: list[str] | None,
    *,
    options: dict[str, str] | None = None,
    fallback: bool = False,
    available: list[str] | None = None,
) -> ProviderPlan:
    """Resolve requested providers against this onnxruntime build.

    Unavailable providers are an error listing the available ones, unless ``fallback``;
    CPU is always appended last so that a session can be created. ``options`` apply to
    the first requested provider: refused for CPU (onnxruntime ignores them); dropped with a
    warning when that provider is missing and ``fallback`` lets the run go on without it.
    """
    avail = available if available is not None else available_providers()
    requested = [canonical(n) for n in (names or ["cpu"])]
    missing = [p for p in requested if p not in avail]
    if missing and not fallback:
        raise ProviderUnavailableError(
            f"execution provider {', '.join(short_name(m) for m in missing)} is not available "
            f"in this onnxruntime build",
            hint="available providers are: "
            + ", ".join(f"{short_name(a)} ({a})" for a in avail)
            + "; install the matching onnxruntime package (e.g. onnxruntime-gpu) or pass "
            "--fallback",
        )
    chosen = [p for p in dict.fromkeys(requested) if p in avail]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    opts: list[dict[str, str]] = [{} for _ in chosen]
    if options:
        first = requested[0]
        if first in NO_PROVIDER_OPTIONS:
            raise UsageError(
                f"--provider-option {_keys(options)}: provider {short_name(first)} takes no "
                "provider options (onnxruntime ignores them)",
                hint="drop --provider-option; for CPU use --threads and --opt-level, or put "
                "the provider the options are for first (--provider cuda ...)",
                code="unknown_provider_option",
            )
        if first in chosen:
            opts[chosen.index(first)] = dict(options)
        else:
            from modelforge.log import warn

            warn(
                f"--provider-option {_keys(options)} not used: provider {short_name(first)} "
                "is not available (--fallback)"
            )
    return ProviderPlan(requested=requested, providers=chosen, options=opts, missing=missing)


def _keys(options: dict[str, str]) -> str:
    return ", ".join(f"'{escape(k)}'" for k in options)


def check_provider_options(effective: dict[str, dict[str, str]], plan: ProviderPlan) -> None:
    """After a session is created: refuse keys of ``--provider-option`` that onnxruntime did
    not take. ``effective`` is ``InferenceSession.get_provider_options()``: every option a
    provider knows, with its value. A provider that reports none cannot be checked (warning)."""
    for name, given in zip(plan.providers, plan.options, strict=True):
        if not given:
            continue
        known = effective.get(name, {})
        if not known:
            from modelforge.log import warn

            warn(
                f"onnxruntime reports no options for provider {short_name(name)}: "
                f"--provider-option {_keys(given)} cannot be checked and may be ignored"
            )
            continue
        unknown = [k for k in given if k not in known]
        if unknown:
            raise UsageError(
                f"--provider-option {_keys({k: '' for k in unknown})}: not an option of "
                f"provider {short_name(name)}",
                hint="valid keys: " + ", ".join(sorted(known)),
                code="unknown_provider_option",
            )


def reported_options(provider: str) -> dict[str, str] | None:
    """The options ``provider`` reports with their defaults (``get_provider_options()`` of a
    session on a one-node model), or None when a session cannot be created with it (its
    libraries or device missing). What ``--provider-option`` keys are checked against."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION, 8)
    import contextlib
    import io
    import warnings

    from modelforge.engine.session import _stdout_fd_to_stderr

    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:  # nothing onnxruntime says about a failing provider may reach stdout
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            _stdout_fd_to_stderr(),
        ):
            warnings.simplefilter("ignore")
            sess = ort.InferenceSession(
                model.SerializeToString(), sess_options=so, providers=[provider]
            )
    except Exception:  # onnxruntime raises its own exception types
        return None
    if provider not in sess.get_providers():
        return None
    return dict(sess.get_provider_options().get(provider, {}))
