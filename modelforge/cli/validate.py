"""``modelforge validate``: run the checks and report pass/warn/fail per check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelforge.cli.common import AtolOpt, DimOpt, JsonOpt, ModelArg, RtolOpt, run
from modelforge.cli.options import CheckLimitsArgs, ProviderArgs, option_groups
from modelforge.model.validate import (  # light: no onnx import
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    LIMIT_CODES,
)

if TYPE_CHECKING:
    from modelforge.errors import ModelForgeError
    from modelforge.render import Renderer

_MARK = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def render_report(out: Renderer, report: Any) -> None:
    from modelforge.text import safe

    out.line(f"validate {safe(report.model, 300)}")
    for c in report.checks:
        out.line(f"  {_MARK.get(c.status, c.status)}  {c.name:<15} {safe(c.message, 400)}")
        if c.status in ("warn", "fail") and c.hint:
            out.line(f"        {'':<15} hint: {safe(c.hint, 400)}")
    counts = report.counts()
    verdict = "OK" if report.ok else "FAILED"
    out.line(
        f"{verdict}: {counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed, "
        f"{counts['skip']} skipped ({report.duration_s:.2f} s)"
    )


def _failure(report: Any) -> ModelForgeError:
    """The error of a report that failed: the first failed (or, with --strict, warned)
    check. One stopped by the timeout, the memory cap or a crash is a resource-limit error
    (exit 8: raising --timeout / --memory-limit may help), not a finding (exit 9)."""
    from modelforge.errors import CheckFailedError, ResourceLimitError

    bad = report.failed or report.warned
    first = bad[0] if bad else None
    what = "failed" if report.failed else "warned (--strict)"
    limit_hit = first is not None and first.status == "fail" and first.code in LIMIT_CODES
    return (ResourceLimitError if limit_hit else CheckFailedError)(
        f"validation of '{report.model}' {what}: "
        + (f"{first.name}: {first.message}" if first else ""),
        hint=first.hint if first else None,
        code=first.code if first else "check_failed",
    )


@dataclass(frozen=True)
class ParityArgs:
    """The output checks: onnx.reference parity, golden outputs, tolerances."""

    reference: Annotated[
        bool, typer.Option("--reference", help="Compare with onnx.reference outputs.")
    ] = False
    inputs: Annotated[
        str | None,
        typer.Option("--inputs", metavar="F.npz", help=".npz of inputs for a golden-output check."),
    ] = None
    expected: Annotated[
        str | None,
        typer.Option(
            "--expected", metavar="F.npz", help=".npz of expected outputs (with --inputs)."
        ),
    ] = None
    rtol: RtolOpt = DEFAULT_RTOL
    atol: AtolOpt = DEFAULT_ATOL

    def build(self) -> dict[str, Any]:
        """ValidateOptions keyword arguments (checked by validate_model)."""
        return {
            "reference": self.reference, "inputs": self.inputs, "expected": self.expected,
            "rtol": self.rtol, "atol": self.atol,
        }  # fmt: skip


@option_groups(session=ProviderArgs, parity=ParityArgs, limits=CheckLimitsArgs)
def validate_cmd(
    ctx: typer.Context,
    model: ModelArg,
    session: ProviderArgs,
    parity: ParityArgs,
    limits: CheckLimitsArgs,
    require_provider: Annotated[
        bool, typer.Option("--require-provider", help="Fail if the session falls back to CPU.")
    ] = False,
    dim: DimOpt = None,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check a model: file, parse, external data, structure, shapes, runtime, session, run.

    Exit 0 when no check fails, 9 when one does, 8 when a resource limit stopped it.

    Example: modelforge validate model.onnx --reference --dim batch=4
    """
    with run(ctx, "validate", json_out) as out:
        from modelforge.api import validate_model
        from modelforge.model.synth import parse_dims
        from modelforge.model.validate import ValidateOptions

        cfg, lim = session.build(), limits.build()
        opts = ValidateOptions(
            providers=cfg.providers, provider_options=cfg.provider_options,
            custom_ops=cfg.custom_ops, require_provider=require_provider,
            dims=parse_dims(dim), strict=strict, **parity.build(),
            timeout_s=lim.timeout_s or 0, memory_mb=lim.memory_mb or 0,
        )  # fmt: skip
        opts = _with_examples_tolerances(ctx, opts)
        with out.progress("validating", unit="checks") as bar:

            def step(check: str) -> None:
                bar.update(description=f"checking {check}")
                bar.advance()

            report = validate_model(model, opts, progress=step)
        if not report.ok:
            out.emit_failure(report, _failure(report), render_report)
        out.emit(report, render_report)


def _with_examples_tolerances(ctx: typer.Context, opts: Any) -> Any:
    """--rtol/--atol given explicitly apply to the examples check too (its own defaults are
    tighter: 1e-5 / 1e-6)."""
    from dataclasses import replace

    def given(name: str) -> bool:  # typer vendors click: compare the source by name
        source = ctx.get_parameter_source(name)
        return getattr(source, "name", "") in ("COMMANDLINE", "ENVIRONMENT")

    if given("rtol"):
        opts = replace(opts, examples_rtol=opts.rtol)
    if given("atol"):
        opts = replace(opts, examples_atol=opts.atol)
    return opts


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)
