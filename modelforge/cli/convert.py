"""``modelforge convert``: change a model's opset, refusing if results change."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelforge.cli.common import JsonOpt, run

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
    model: Annotated[str, typer.Argument(help="Model path or store reference (NAME[:VERSION]).")],
    opset: Annotated[int, typer.Option("--opset", help="Target ai.onnx opset.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the new model.")],
    rtol: Annotated[float, typer.Option("--rtol", help="Relative tolerance for parity.")] = 1e-4,
    atol: Annotated[float, typer.Option("--atol", help="Absolute tolerance for parity.")] = 1e-5,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds for the guarded conversion.")
    ] = None,
    memory_limit: Annotated[
        int | None, typer.Option("--memory-limit", help="Address-space cap in MiB.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert a model to another opset; written only if outputs stay the same.

    Example: modelforge convert old.onnx --opset 17 -o new.onnx
    """
    with run(ctx, "convert", json_out) as out:
        from modelforge.model.convert import convert_model
        from modelforge.store.resolve import resolve_model

        location = resolve_model(model)
        result = convert_model(
            location.path, opset, output, rtol, atol, trusted=location.trusted,
            timeout_s=timeout, memory_mb=memory_limit,
        )  # fmt: skip
        out.emit(result, render_convert)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_cmd)
