"""``modelforge convert``: change a model's opset, refusing if results change."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelforge.cli.common import (
    AtolOpt,
    JsonOpt,
    MemoryLimitOpt,
    ModelArg,
    RtolOpt,
    TimeoutOpt,
    run,
)
from modelforge.model.convert import DEFAULT_ATOL, DEFAULT_RTOL  # light: no onnx import

if TYPE_CHECKING:
    from modelforge.render import Renderer


def render_convert(out: Renderer, r: Any) -> None:
    from modelforge.text import safe

    out.line(f"converted {safe(r.source, 300)} (opset {r.from_opset}) -> "
             f"{safe(r.output, 300)} (opset {r.to_opset})")  # fmt: skip
    for p in r.parity:
        err = f"max abs error {p['max_abs']:.3g}" if "max_abs" in p else "equal"
        out.line(f"  parity {safe(p['name'], 80)}: {err} (vs original in {r.compared_with})")
    if r.external_data:
        out.line(f"  external data written to {safe(r.external_data, 200)} next to the model")


def convert_cmd(
    ctx: typer.Context,
    model: ModelArg,
    opset: Annotated[int, typer.Option("--opset", metavar="N", help="Target ai.onnx opset.")],
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="OUT", help="Where to write the new model.")
    ],
    rtol: RtolOpt = DEFAULT_RTOL,
    atol: AtolOpt = DEFAULT_ATOL,
    timeout: TimeoutOpt = None,
    memory_limit: MemoryLimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert a model to another opset; written only if outputs stay the same.

    Example: modelforge convert old.onnx --opset 17 -o new.onnx
    """
    with run(ctx, "convert", json_out) as out:
        from modelforge.api import convert_model

        with out.progress(f"converting to opset {opset}", unit="steps"):  # a spinner
            result = convert_model(
                model, opset, output, rtol, atol,
                timeout_s=timeout, memory_mb=memory_limit,
            )  # fmt: skip
        out.emit(result, render_convert)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_cmd)
