"""Checks 2-10 of validate, run inside the guarded child process.

Before a check starts the child sends ``{"stage": name}`` and when it ends
``{"check": {...}}`` to the parent, so a crash keeps everything reported so far. Nothing
here prints (stdout/stderr are /dev/null in the child).
"""

from __future__ import annotations

from typing import Any

from modelforge.engine import isolate
from modelforge.errors import ModelForgeError
from modelforge.model.checks.context import Check, Ctx, one_line, raised_by_dependency
from modelforge.model.checks.session import check_session, check_smoke
from modelforge.model.checks.static import (
    check_external,
    check_parse,
    check_runtime,
    check_shapes,
    check_structure,
)
from modelforge.model.checks.types import PREREQUISITES, ValidateOptions


def _parity(ctx: Ctx) -> Check:
    from modelforge.model.checks.parity import check_parity

    return check_parity(ctx)


def _examples(ctx: Ctx) -> Check:
    from modelforge.model.checks.examples import check_examples

    return check_examples(ctx)


CHECKS = {
    "parse": check_parse,
    "external_data": check_external,
    "structure": check_structure,
    "shapes": check_shapes,
    "runtime_compat": check_runtime,
    "session": check_session,
    "smoke": check_smoke,
    "parity": _parity,
    "examples": _examples,
}


def _run_one(name: str, ctx: Ctx) -> Check:
    try:
        return CHECKS[name](ctx)
    except ModelForgeError as err:
        return Check(name, "fail", err.code, err.message, err.hint, dict(err.details))
    except RecursionError:
        return Check(
            name, "fail", "nesting_too_deep", "the model is nested too deeply to check",
            "the file is malformed or hostile",
        )  # fmt: skip
    except Exception as exc:
        if isolate.is_allocation_failure(exc):
            return Check(
                name, "fail", "memory_limit",
                f"onnx/onnxruntime could not allocate memory under the address-space cap: "
                f"{one_line(exc, 300)}",
                "the model asks for absurd allocations, or is legitimately large: then raise "
                "--memory-limit (MODELFORGE_MEMORY_MB)",
            )  # fmt: skip
        if not raised_by_dependency(exc):
            raise  # a bug in ModelForge itself: the parent reports it as one (exit 1)
        import traceback

        return Check(
            name, "fail", "check_error", f"{type(exc).__name__}: {one_line(exc)}",
            "onnx/onnxruntime could not process the model; if it is valid, report this",
            {"traceback": traceback.format_exc()[-4000:]},
        )  # fmt: skip


def run_checks(
    path: str, opts: ValidateOptions, wanted: list[str], expected_sha256: str | None = None
) -> dict[str, Any]:
    """Entry point in the guarded child: run checks 2.. in order, streaming each result."""
    ctx = Ctx(path=path, opts=opts, expected_sha256=expected_sha256)
    ctx.results["file"] = Check("file", "pass", "ok", "")
    for name in wanted:
        if name == "file":
            continue
        if name == "parity" and not (opts.reference or opts.inputs):
            continue
        if name == "examples" and not opts.examples:
            continue
        prereq = PREREQUISITES[name]
        if any(ctx.results.get(p) is None or ctx.results[p].status in ("fail", "skip")
               for p in prereq):  # fmt: skip
            continue
        isolate.progress({"stage": name})
        check = _run_one(name, ctx)
        ctx.results[name] = check
        isolate.progress({"check": check.to_dict(), "extra": ctx.extra})
    return ctx.extra
