"""``modelforge providers``: the execution providers of this onnxruntime build."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from modelforge.cli.common import JsonOpt, run

if TYPE_CHECKING:
    from modelforge.render import Renderer


@dataclass(frozen=True)
class ProviderList:
    onnxruntime_version: str
    providers: list[dict[str, Any]]  # short, name, options (keys reported; None: no session)

    def to_dict(self) -> dict[str, Any]:
        return {"onnxruntime_version": self.onnxruntime_version, "providers": self.providers}


def list_providers() -> ProviderList:
    import onnxruntime as ort

    from modelforge.engine.providers import available_providers, reported_options, short_name

    return ProviderList(
        onnxruntime_version=str(ort.__version__),
        providers=[
            {"short": short_name(p), "name": p, "options": reported_options(p)}
            for p in available_providers()
        ],
    )


def _options_text(p: dict[str, Any]) -> str:
    from modelforge.engine.providers import NO_PROVIDER_OPTIONS

    if p["name"] in NO_PROVIDER_OPTIONS:
        return "none (use --threads, --opt-level)"
    if p["options"] is None:
        return "? (no session could be created)"
    return ", ".join(sorted(p["options"])) or "not reported by onnxruntime"


def _render(out: Renderer, r: ProviderList) -> None:
    from modelforge.render import table

    t = table(
        "short name",
        "onnxruntime name",
        "--provider-option keys",
        title=f"onnxruntime {r.onnxruntime_version}",
    )
    for p in r.providers:
        t.add_row(p["short"], p["name"], _options_text(p))
    out.print(t)


def providers_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the execution providers this onnxruntime build offers, with short names.

    Example: modelforge providers --json
    """
    with run(ctx, "providers", json_out) as out:
        out.emit(list_providers(), _render)


def register(app: typer.Typer) -> None:
    app.command("providers")(providers_cmd)
