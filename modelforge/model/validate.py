"""``validate``: a sequence of checks that catch conversion problems before anyone relies on
a model.

Checks, in order (each runs only when its prerequisites passed; otherwise it is ``skip``):

1. ``file``            regular file, non-empty, under the 2 GiB protobuf cap
2. ``parse``           binary ModelProto, ir_version > 0, a graph, one opset per domain
3. ``external_data``   every external reference stays inside the model's folder
4. ``structure``       onnx.checker + cycles, undefined inputs, duplicate outputs, negative
                       dims, node-count and nesting caps, recursive functions
5. ``shapes``          strict shape inference (onnx ``full_check``'s inference step)
6. ``runtime_compat``  IR version / opsets against the installed onnxruntime; custom domains
7. ``session``         an onnxruntime session on the chosen providers
8. ``smoke``           run on synthesized inputs; dtypes, ranks, NaN/Inf
9. ``parity``          (opt-in) onnx.reference and/or golden ``--inputs``/``--expected``
10. ``examples``       store versions with golden examples (``models add --example``):
                       rerun them and compare with the stored outputs; skipped otherwise

Check 1 runs in this process (``stat`` only). Checks 2-10 run in ONE guarded child process
(:func:`modelforge.engine.isolate.run_isolated`): each finished check is streamed back as
it completes, so when onnx/onnxruntime crashes, hangs or exhausts the memory cap, the
checks before it are kept and the check that was running fails with code ``crashed``,
``timeout`` or ``memory_limit``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.errors import ModelForgeError, NotFoundError, ResourceLimitError, UsageError
from modelforge.model.checks.types import (
    CHECK_ORDER,
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    LIMIT_CODES,
    PREREQUISITES,
    STATUSES,
    Check,
    ValidateOptions,
    checks_to_run,
)
from modelforge.text import escape

if TYPE_CHECKING:
    from modelforge.model.open import OpenedModel

__all__ = [
    "CHECK_ORDER",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "LIMIT_CODES",
    "PREREQUISITES",
    "Check",
    "ValidateOptions",
    "ValidationReport",
    "check_options",
    "checks_to_run",
    "validate_model",
]


@dataclass(frozen=True)
class ValidationReport:
    model: str
    checks: list[Check]
    ok: bool
    strict: bool = False
    schema: dict[str, Any] | None = None
    inferred_outputs: list[dict[str, Any]] | None = None
    providers_used: list[str] | None = None
    model_info: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warned(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ok": self.ok,
            "strict": self.strict,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
            "schema": self.schema,
            "inferred_outputs": self.inferred_outputs,
            "providers_used": self.providers_used,
            "model_info": self.model_info,
            "limits": self.limits,
            "options": self.options,
            "duration_s": round(self.duration_s, 4),
        }


def _file_check(path: Path) -> Check:
    from modelforge.model.files import MAX_MODEL_BYTES, check_regular_file
    from modelforge.text import human_bytes

    try:
        info = check_regular_file(path)
    except NotFoundError:
        raise
    except ModelForgeError as err:
        return Check("file", "fail", err.code, err.message, err.hint)
    details = {"size": info.size, "is_symlink": info.is_symlink}
    if info.size == 0:
        return Check(
            "file", "fail", "empty_file", f"model file '{escape(path)}' is empty",
            "re-export the model", details,
        )  # fmt: skip
    if info.size > MAX_MODEL_BYTES:
        return Check(
            "file",
            "fail",
            "file_too_large",
            f"model file '{escape(path)}' is {human_bytes(info.size)}, over the 2 GiB limit "
            "of a single ONNX protobuf",
            "models over 2 GB must keep their weights as external data "
            "(onnx.save_model(..., save_as_external_data=True))",
            details,
        )
    if not os.access(info.resolved, os.R_OK):
        return Check(
            "file", "fail", "file_unreadable", f"model file '{escape(path)}' is not readable",
            "check the file's permissions", details,
        )  # fmt: skip
    return Check("file", "pass", "ok", f"regular file, {human_bytes(info.size)}", None, details)


def check_options(opts: ValidateOptions) -> None:
    """Refuse bad options (usage errors, exit 2) and missing option files (exit 3)."""
    checks_to_run(opts.stop_after)
    if (opts.inputs is None) != (opts.expected is None):
        raise UsageError(
            "--inputs and --expected go together",
            hint="pass both: --inputs inputs.npz --expected outputs.npz",
            code="invalid_option",
        )
    for label, value in (("--inputs", opts.inputs), ("--expected", opts.expected)):
        if value is not None and not Path(value).exists():
            raise NotFoundError(
                f"{label} file '{escape(value)}' does not exist",
                hint="pass the .npz of golden inputs/outputs saved from the source framework "
                "(see 'modelforge validate --help')",
                code="file_not_found",
            )
    for lib in opts.custom_ops:
        if not Path(lib).is_file():
            raise NotFoundError(
                f"custom-op library '{escape(lib)}' does not exist or is not a file",
                code="file_not_found",
            )
    if not (opts.rtol >= 0 and opts.atol >= 0):  # also refuses NaN
        raise UsageError("--rtol and --atol must be >= 0", code="invalid_option")
    from modelforge.engine.providers import canonical

    for name in opts.providers or []:
        canonical(name)  # unknown names are usage errors (exit 2), not failed checks


def _crash_hint(err: ResourceLimitError, opts: ValidateOptions) -> str | None:
    """The generic crash hint says "run 'modelforge validate MODEL'": circular here. A crash
    with custom-op libraries loaded is most likely theirs."""
    if err.code != "crashed":
        return err.hint
    if opts.custom_ops:
        return (
            "a custom-op library passed with --custom-ops runs inside the checks and may be "
            "what crashed: rerun without it (runtime_compat then lists the ops it must provide)"
        )
    return (
        "the model triggers a bug in onnx/onnxruntime; it is likely malformed or hostile: "
        "re-export it"
    )


def validate_model(
    model: str | os.PathLike[str] | OpenedModel,
    options: ValidateOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    label: str | None = None,
) -> ValidationReport:
    """Run the checks on a model file; never raises for problems of the model itself.

    ``model`` is a path or an :class:`~modelforge.model.open.OpenedModel` (then the checks
    read the same bytes again in the guarded child and refuse them if their sha256 changed;
    a trusted, store-owned model may keep hard-linked external data). Store references are
    resolved by :func:`modelforge.validate_model` (``modelforge.api``), not here. ``label``
    names the model in the report (default: its path). ``progress`` (optional) is called
    with the name of each check as it starts.
    Raises NotFoundError when the model (or an option file) does not exist and UsageError
    for bad options; everything wrong with the model is a failed check in the report.
    """
    from modelforge.engine.isolate import Limits, run_isolated
    from modelforge.model.open import OpenedModel

    opts = options or ValidateOptions()
    wanted = checks_to_run(opts.stop_after)
    check_options(opts)
    expected_sha256: str | None = None
    if isinstance(model, OpenedModel):
        path, expected_sha256 = model.path, model.sha256
        if model.trusted and not opts.trusted:
            opts = replace(opts, trusted=True)
    else:
        path = Path(os.fspath(model)).absolute()
    limits = Limits.for_checks(opts.timeout_s, opts.memory_mb)
    started = time.monotonic()
    results: dict[str, Check] = {"file": _file_check(path)}
    extra: dict[str, Any] = {}
    state: dict[str, str | None] = {"running": None}

    def on_progress(message: Any) -> None:
        if isinstance(message, dict) and "stage" in message:
            state["running"] = message["stage"]
            if progress is not None:
                progress(str(message["stage"]))
        elif isinstance(message, dict) and "check" in message:
            check = Check.from_dict(message["check"])
            results[check.name] = check
            state["running"] = None
            if isinstance(message.get("extra"), dict):
                extra.update(message["extra"])  # kept even if a later check crashes

    if results["file"].status != "fail" and len(wanted) > 1:
        from modelforge.model.checks.runner import run_checks

        try:
            final_extra = run_isolated(
                run_checks,
                os.fspath(path),
                replace(opts, timeout_s=None, memory_mb=None),
                list(wanted),
                expected_sha256,
                limits=limits,
                what=f"validating '{escape(path.name)}'",
                on_progress=on_progress,
            )
            extra.update(final_extra)
        except ResourceLimitError as err:
            stage = state["running"] or next((n for n in wanted if n not in results), wanted[-1])
            results[stage] = Check(
                stage, "fail", err.code, f"{err.message} (during the '{stage}' check)",
                _crash_hint(err, opts), {"limits": limits.to_dict()},
            )  # fmt: skip
    final: dict[str, Check] = {}
    for name in wanted:
        check = results.get(name)
        if check is None and name == "parity" and not (opts.reference or opts.inputs):
            check = Check(
                name, "skip", "not_requested",
                "not requested (pass --reference, or --inputs and --expected)",
            )  # fmt: skip
        if check is None and name == "examples" and not opts.examples:
            check = Check(
                name, "skip", "no_examples",
                "no golden examples stored with this version (models add --example DATA)",
            )  # fmt: skip
        if check is None:
            blockers = [
                p for p in PREREQUISITES[name]
                if p in final and final[p].status in ("fail", "skip")
            ]  # fmt: skip
            reason = f"skipped: '{blockers[0]}' did not pass" if blockers else "skipped: not run"
            check = Check(name, "skip", "prerequisite_failed" if blockers else "not_run", reason)
        final[name] = check
    checks = list(final.values())
    ok = not any(c.status == "fail" for c in checks) and not (
        opts.strict and any(c.status == "warn" for c in checks)
    )
    return ValidationReport(
        model=label or str(path),
        checks=checks,
        ok=ok,
        strict=opts.strict,
        schema=extra.get("schema"),
        inferred_outputs=extra.get("inferred_outputs"),
        providers_used=extra.get("providers_used"),
        model_info=extra.get("model_info") or {},
        limits=limits.to_dict(),
        options=opts.to_dict(),
        duration_s=time.monotonic() - started,
    )
