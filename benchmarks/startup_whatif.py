"""Experiment (not product code): modelforge with the two start-up fixes recommended in
docs/performance.md "## Start-up", to measure what they would gain:

1. plain coercion for Typer parameters. Typer 0.29 coerces every parameter value through a
   pydantic TypeAdapter, so any command that parses a parameter imports pydantic (~60-75
   ms). Every parameter of this CLI is str, bool, int, float or list[str], which need no
   pydantic. This uses Typer's private ``_TyperParameter.get_runtime_param`` /
   ``RuntimeParam`` API, which is why it lives here and not in modelforge/cli/app.py.
2. lazy command modules: only the invoked command's module is imported and registered (the
   others are stubs). ``--help`` registers stubs that carry a placeholder summary, as a lazy
   group with a static summary table would.

    python benchmarks/startup.py --alt ".venv/bin/python benchmarks/startup_whatif.py"

The command must be the first argument that does not start with "-".
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import typer
import typer.core
from typer._coercion import RuntimeParam

KINDS: dict[Any, type] = {bool: bool, str: str, int: int, float: float}
_original = typer.core._TyperParameter.get_runtime_param


@dataclass(frozen=True)
class PlainParam(RuntimeParam):
    """str, bool, int, float and list[str] values, coerced without pydantic."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        if self.annotation == list[str]:
            return [str(v) for v in value]
        kind = KINDS[self.annotation]
        if isinstance(value, kind):
            return value
        try:
            return kind(value)
        except ValueError:
            raise typer.BadParameter(
                f"{value!r} is not a valid {kind.__name__}.", ctx=ctx, param=param
            ) from None


def _runtime_param(self: Any) -> Any:
    desc = self.type_descriptor
    simple = desc.annotation in KINDS or desc.annotation == list[str]
    if self._runtime_param is None and simple and desc.parameter_info.parser is None:
        self._runtime_param = PlainParam(
            parameter_info=desc.parameter_info, annotation=desc.annotation
        )
    return _original(self)


typer.core._TyperParameter.get_runtime_param = _runtime_param  # type: ignore[method-assign]

COMMANDS = ("models", "validate", "inspect", "convert", "predict", "bench", "providers")
wanted = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
for name in COMMANDS:
    if name == wanted:
        continue
    stub = types.ModuleType(f"modelforge.cli.{name}")

    def register(app: typer.Typer, name: str = name) -> None:
        def command() -> None:
            """(summary from a static table)"""

        app.command(name)(command)

    stub.register = register  # type: ignore[attr-defined]
    sys.modules[f"modelforge.cli.{name}"] = stub

from modelforge.cli.app import main  # noqa: E402

main()
