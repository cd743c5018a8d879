"""Creating onnxruntime sessions (separate from running them), and translating its errors.

onnxruntime's own C++ log lines never reach the terminal: sessions log at FATAL only, and
every onnxruntime exception becomes a one-line ModelForge error. Nothing onnxruntime prints
while a session is created reaches stdout (its Python "EP Error ... Falling back" banner is
captured, and fd 1 points at stderr meanwhile): stdout carries predictions only. A provider
that fails to initialise is an error naming it and onnxruntime's reason, unless
``fallback`` (then a warning says so).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.engine.providers import (
    ProviderPlan,
    check_provider_options,
    plan_providers,
    short_name,
)
from modelforge.errors import (
    InvalidModelError,
    ModelForgeError,
    ResourceLimitError,
    RuntimeFailure,
    UsageError,
)
from modelforge.text import escape, truncate

if TYPE_CHECKING:
    import onnxruntime as ort

OPT_LEVELS = ("disable", "basic", "extended", "all")
_ORT_LOG_FATAL = 4


@dataclass(frozen=True)
class SessionConfig:
    """Everything that decides how a session is built; reported with results."""

    providers: list[str] | None = None  # short or full names, priority order; None = cpu
    provider_options: dict[str, str] = field(default_factory=dict)
    fallback: bool = False
    threads: int | None = None  # intra-op threads; None = onnxruntime's default
    opt_level: str | None = None  # disable|basic|extended|all; None = onnxruntime default
    custom_ops: tuple[str, ...] = ()  # custom-op libraries: loaded only when given
    # intra-op threads spin-wait for work between runs (None: onnxruntime's default, spin)
    # or sleep (False: cluster workers, whose spinning threads take the cores that their
    # event loop, nanny and scheduler need between parts)
    spinning: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "providers": self.providers or ["cpu"],
            "provider_options": self.provider_options,
            "fallback": self.fallback,
            "threads": self.threads,
            "opt_level": self.opt_level or "all",
            "custom_ops": list(self.custom_ops),
            "spinning": self.spinning,
        }


def quiet_onnxruntime() -> None:
    """Make onnxruntime's default logger print nothing below FATAL."""
    import onnxruntime as ort

    ort.set_default_logger_severity(_ORT_LOG_FATAL)


def check_threads(threads: int) -> None:
    """0 (onnxruntime's default) up to 4 per CPU (at least 64): onnxruntime crashes or
    hangs starting thousands of threads, which would read as a broken model."""
    most = max(64, 4 * (os.cpu_count() or 1))
    if not 0 <= threads <= most:
        raise UsageError(
            f"--threads must be 0 (onnxruntime default) up to {most} (4 per CPU), got {threads}",
            hint="pass 0, or at most the number of CPU cores",
            code="invalid_option",
        )


def session_options(cfg: SessionConfig) -> ort.SessionOptions:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = _ORT_LOG_FATAL
    so.log_verbosity_level = 0
    if cfg.threads is not None:
        check_threads(cfg.threads)
        so.intra_op_num_threads = cfg.threads
    if cfg.spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", str(int(cfg.spinning)))
    if cfg.opt_level is not None:
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if cfg.opt_level not in levels:
            raise UsageError(
                f"unknown optimisation level '{escape(cfg.opt_level)}'",
                hint="use one of: " + ", ".join(OPT_LEVELS),
                code="invalid_option",
            )
        so.graph_optimization_level = levels[cfg.opt_level]
    for lib in cfg.custom_ops:
        path = Path(lib)
        if not path.is_file():
            raise UsageError(
                f"custom-op library '{escape(lib)}' does not exist or is not a file",
                code="invalid_option",
            )
        try:  # absolute: dlopen looks a bare name up on the library path, not here
            so.register_custom_ops_library(os.fspath(path.absolute()))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise translate_error(exc, f"loading custom-op library '{escape(lib)}'") from None
    return so


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # onnxruntime prefixes messages with "[ONNXRuntimeError] : 1 : FAIL : "
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    # drop C++ source locations and signatures ("/src/.../model.cc:245 ns::Model::Model(...) ")
    text = _CPP_LOCATION.sub("", text)
    return truncate(escape(" ".join(text.split())), 400)


_CPP_LOCATION = re.compile(r"\S+\.(?:cc|cpp|h):\d+ (?:[\w:<>~,*& ]+\([^()]*\)(?: const)? )?")


_OLD_OPSET = re.compile(r"Could not find an implementation for (\w+)\((\d+)\)")
_DOUBLE_ZIPMAP = re.compile(r"Type 'tensor\(double\)' of input parameter .* of operator \(ZipMap\)")


def translate_error(exc: BaseException, doing: str) -> ModelForgeError:
    """Turn an onnxruntime exception into a one-line ModelForge error."""
    if isinstance(exc, ModelForgeError):
        return exc
    msg = first_line(exc)
    kind = type(exc).__name__
    from modelforge.engine.isolate import is_allocation_failure

    if is_allocation_failure(exc):  # e.g. std::bad_alloc while constant-folding at creation
        return ResourceLimitError(
            f"onnxruntime ran out of memory while {doing}: {msg}",
            hint="raise the cap with --memory-limit MB or MODELFORGE_MEMORY_MB=MB if the model "
            "is legitimately this large; otherwise the file asks for absurd allocations",
            code="memory_limit",
        )
    old = _OLD_OPSET.search(str(exc))
    if old:
        return InvalidModelError(
            f"onnxruntime has no kernel for {old.group(1)} at opset {old.group(2)} while {doing}",
            hint="the model's opset is too old for this onnxruntime; run "
            "'modelforge convert MODEL --opset 13 -o new.onnx' (predict upgrades automatically "
            "unless --no-upgrade)",
            code="opset_too_old",
        )
    if _DOUBLE_ZIPMAP.search(str(exc)):
        return InvalidModelError(
            f"onnxruntime rejected the model while {doing}: its ZipMap gets double "
            "probabilities, which ZipMap does not accept",
            hint="the model was converted from float64 data (e.g. to_onnx(pipe, df[:1]) on a "
            "float64 frame): convert with X[:1].astype(numpy.float32), or pass "
            "initial_types=[('X', FloatTensorType([None, F]))], or options={'zipmap': False}",
            code="session_failed",
        )
    if kind in ("InvalidGraph", "InvalidProtobuf", "NoSuchFile", "ModelLoaded"):
        return InvalidModelError(
            f"onnxruntime rejected the model while {doing}: {msg}",
            hint="run 'modelforge validate MODEL' for a full diagnosis",
            code="session_failed",
        )
    if kind == "NotImplemented":
        return RuntimeFailure(
            f"onnxruntime does not support this model while {doing}: {msg}",
            hint="run 'modelforge validate MODEL' to see which op or opset",
            code="not_implemented",
        )
    if kind == "InvalidArgument":
        return RuntimeFailure(
            f"onnxruntime refused the input while {doing}: {msg}",
            hint="check input names, dtypes and shapes with 'modelforge inspect MODEL'",
            code="invalid_argument",
        )
    hint = (
        "the model is malformed or needs something this onnxruntime lacks: re-export it, or "
        "upgrade onnxruntime"
        if "session" in doing
        else None
    )
    return RuntimeFailure(
        f"onnxruntime failed while {doing}: {msg}", hint=hint, code="runtime_error"
    )


@dataclass
class Session:
    """An onnxruntime session plus what was asked for and what it actually uses."""

    inner: ort.InferenceSession
    plan: ProviderPlan
    config: SessionConfig

    @property
    def providers_used(self) -> list[str]:
        return list(self.inner.get_providers())

    def to_dict(self) -> dict[str, Any]:
        return {
            "providers_requested": [short_name(p) for p in self.plan.requested],
            "providers_used": [short_name(p) for p in self.providers_used],
            "config": self.config.to_dict(),
        }


def create_session(
    model: str | os.PathLike[str] | bytes,
    cfg: SessionConfig | None = None,
    *,
    external_data_dir: str | os.PathLike[str] | None = None,
) -> Session:
    """Create a session from a path or serialized bytes.

    ``external_data_dir``: where external data lives when ``model`` is bytes (e.g. a model
    upgraded in memory). Callers must have checked external-data locations beforehand
    (:func:`modelforge.model.external.check_external_data`).
    """
    import onnxruntime as ort

    cfg = cfg or SessionConfig()
    quiet_onnxruntime()
    plan = plan_providers(cfg.providers, options=cfg.provider_options, fallback=cfg.fallback)
    so = session_options(cfg)
    if isinstance(model, bytes) and external_data_dir is not None:
        so.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", os.fspath(external_data_dir)
        )
    source = model if isinstance(model, bytes) else os.fspath(model)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), _stdout_fd_to_stderr():
            inner = ort.InferenceSession(
                source, sess_options=so, providers=plan.providers, provider_options=plan.options
            )
    except Exception as exc:  # onnxruntime raises pybind exception types
        refused = unknown_option_error(str(exc), plan)
        raise (refused or translate_error(exc, "creating the onnxruntime session")) from None
    refused = unknown_option_error(printed.getvalue(), plan)  # the "EP Error" banner
    if refused is not None:
        raise refused
    _check_providers(inner, plan, cfg, printed.getvalue())
    check_provider_options(inner.get_provider_options(), plan)
    inner.disable_fallback()  # a provider failing mid-run raises instead of printing to stdout
    return Session(inner=inner, plan=plan, config=cfg)


_UNKNOWN_OPTION = re.compile(r'Unknown provider option: "([^"]*)"')


def unknown_option_error(text: str, plan: ProviderPlan) -> UsageError | None:
    """onnxruntime's own refusal of a key (CUDA, TensorRT, ROCm, MIGraphX, ... parse their
    options with ``ProviderOptionsParser``: 'Unknown provider option: "k".') as the same
    usage error as the keys ModelForge checks itself."""
    found = _UNKNOWN_OPTION.search(text)
    if found is None:
        return None
    key = found.group(1)
    owner = next((p for p, o in zip(plan.providers, plan.options, strict=True) if key in o), None)
    where = f"provider {short_name(owner)}" if owner else "the first provider"
    return UsageError(
        f"--provider-option '{escape(key)}': not an option of {where} (onnxruntime refused it)",
        hint="'modelforge providers' lists each provider's keys",
        code="unknown_provider_option",
    )


def _check_providers(inner: Any, plan: ProviderPlan, cfg: SessionConfig, printed: str) -> None:
    """onnxruntime silently falls back to CPU when a provider fails to initialise: that is
    an error naming the provider and the reason, unless ``fallback``."""
    used = set(inner.get_providers())
    lost = [p for p in plan.providers if p not in used]
    if not lost:
        return
    names = ", ".join(short_name(p) for p in lost)
    reason = next((ln for ln in printed.splitlines() if ln.startswith("EP Error")), "")
    reason = truncate(escape(reason.removeprefix("EP Error").strip()), 300)
    message = f"provider {names} failed to initialise" + (f": {reason}" if reason else "")
    if cfg.fallback:
        from modelforge.log import warn

        warn(f"{message}; fell back to {', '.join(short_name(p) for p in used)}")
        return
    from modelforge.errors import ProviderUnavailableError

    raise ProviderUnavailableError(
        message,
        hint="check the provider's libraries and drivers, or pass --fallback to use the "
        "available providers",
        code="provider_failed",
    )


@contextlib.contextmanager
def _stdout_fd_to_stderr() -> Iterator[None]:
    """Point fd 1 at stderr while onnxruntime's C++ code may print."""
    import sys

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
