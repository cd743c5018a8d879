"""Shared argument groups: declared once, validated once, turned into core option objects.

A group is a frozen dataclass whose fields are Typer options (``Annotated``); its
``build()`` checks the values and returns the core object. A command takes a whole group
as one parameter::

    @option_groups(session=SessionArgs, limits=JobLimitsArgs)
    def bench_cmd(ctx, model: ModelArg, session: SessionArgs, limits: JobLimitsArgs, ...):
        with run(ctx, "bench", json_out) as out:
            cfg = session.build()        # SessionConfig; a bad value is one error line
            lim = limits.build()         # engine.isolate.Limits

:func:`option_groups` puts the group's options into the command's signature for Typer
(after the command's own parameters, before ``--json``) and hands the command one group
object; ``build()`` runs inside ``run()`` so that errors get the envelope and exit code.

Groups: :class:`ProviderArgs` (provider, provider options, custom ops) and
:class:`SessionArgs` (+ threads, opt level) -> ``SessionConfig``;
:class:`CheckLimitsArgs` / :class:`JobLimitsArgs` (timeout, memory) -> ``Limits``;
:class:`MappingArgs` (``--map``, ``--columns``) and :class:`DataArgs` (+ format, cast,
NaN policy, batch size) -> mapping values / ``PredictOptions`` keyword arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from modelforge.cli.common import (
    CustomOpsOpt,
    JobMemoryLimitOpt,
    JobTimeoutOpt,
    MemoryLimitOpt,
    OptLevelOpt,
    ProviderOpt,
    ProviderOptionOpt,
    ThreadsOpt,
    TimeoutOpt,
    parse_key_values,
    split_csv_option,
)

if TYPE_CHECKING:
    from modelforge.engine.isolate import Limits
    from modelforge.engine.session import SessionConfig

F = TypeVar("F", bound=Callable[..., Any])


def parse_maps(items: list[str] | None) -> dict[str, list[str]]:
    """The one ``--map INPUT=COL[,COL...]`` parser: naming an input twice is refused."""
    from modelforge.errors import UsageError
    from modelforge.text import escape

    out: dict[str, list[str]] = {}
    for item in items or []:
        for key, value in parse_key_values([item], "--map").items():
            if key in out:
                raise UsageError(
                    f"--map names input '{escape(key)}' twice",
                    hint=f"list its columns once: --map {escape(key)}=a,b,c",
                    code="invalid_option",
                )
            out[key] = split_csv_option(value) or []
    return out


@dataclass(frozen=True)
class ProviderArgs:
    provider: ProviderOpt = None
    provider_option: ProviderOptionOpt = None
    custom_ops: CustomOpsOpt = None

    def build(self, **extra: Any) -> SessionConfig:
        """The SessionConfig of these options (``extra``: e.g. ``fallback=True``); the
        values themselves are checked where the session is made, before any work."""
        from modelforge.engine.session import SessionConfig

        values = {
            "providers": list(self.provider) if self.provider else None,
            "provider_options": parse_key_values(self.provider_option, "--provider-option"),
            "custom_ops": tuple(self.custom_ops or ()),
            **self._extra(),
            **extra,
        }
        return SessionConfig(**values)

    def _extra(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class SessionArgs(ProviderArgs):
    threads: ThreadsOpt = None
    opt_level: OptLevelOpt = None

    def _extra(self) -> dict[str, Any]:
        return {"threads": self.threads, "opt_level": self.opt_level}


@dataclass(frozen=True)
class CheckLimitsArgs:
    """validate / convert / models add: defaults from the environment, then built in."""

    timeout: TimeoutOpt = None
    memory_limit: MemoryLimitOpt = None

    def build(self) -> Limits:
        from modelforge.engine.isolate import Limits

        return Limits.for_checks(self.timeout, self.memory_limit)


@dataclass(frozen=True)
class JobLimitsArgs:
    """predict / bench: no timeout unless given; the memory cap at least 4096 MiB."""

    memory_limit: JobMemoryLimitOpt = None
    timeout: JobTimeoutOpt = None

    def build(self) -> Limits:
        from modelforge.engine.isolate import Limits

        return Limits.for_jobs(self.memory_limit, self.timeout)


MapOpt = Annotated[
    list[str] | None,
    typer.Option("--map", metavar="INPUT=COLS", help="INPUT=COL[,COL...] mapping; repeat."),
]
ColumnsOpt = Annotated[
    str | None,
    typer.Option("--columns", metavar="A,B", help="Ordered columns for the single 2-D input."),
]


@dataclass(frozen=True)
class MappingArgs:
    map_: MapOpt = None
    columns: ColumnsOpt = None

    def build(self) -> dict[str, Any]:
        """``maps`` and ``columns`` keyword arguments of PredictOptions / BenchOptions."""
        return {"maps": parse_maps(self.map_), "columns": split_csv_option(self.columns)}


@dataclass(frozen=True)
class DataArgs(MappingArgs):
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="Input format: csv tsv npy npz parquet jsonl json."),
    ] = None
    cast: Annotated[
        str, typer.Option("--cast", help="Cast policy: safe (lossless), strict or force.")
    ] = "safe"
    allow_nan: Annotated[
        bool, typer.Option("--allow-nan", help="Pass NaN/empty cells to the model.")
    ] = False
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per onnxruntime run.")] = (
        10_000
    )

    def build(self) -> dict[str, Any]:
        """Keyword arguments for ``PredictOptions`` (which validates them once)."""
        return {
            **super().build(),
            "fmt": self.fmt,
            "cast": self.cast,
            "allow_nan": self.allow_nan,
            "batch_size": self.batch_size,
        }


def option_groups(**groups: type) -> Callable[[F], F]:
    """Give a Typer command whole option groups as single parameters (see module doc)."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in sig.parameters.values()
            if p.name not in groups
        ]
        added: list[inspect.Parameter] = []
        for cls in groups.values():
            cls_hints = typing.get_type_hints(cls, include_extras=True)
            for f in dataclasses.fields(cls):
                added.append(
                    inspect.Parameter(
                        f.name,
                        inspect.Parameter.POSITIONAL_OR_KEYWORD,
                        default=f.default,
                        annotation=cls_hints[f.name],
                    )
                )
        at = next((i for i, p in enumerate(own) if p.name == "json_out"), len(own))
        params = [*own[:at], *added, *own[at:]]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for name, cls in groups.items():
                fields = [f.name for f in dataclasses.fields(cls)]
                kwargs[name] = cls(**{k: kwargs.pop(k) for k in fields if k in kwargs})
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return typing.cast(F, wrapper)

    return decorate
