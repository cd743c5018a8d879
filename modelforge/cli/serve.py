"""``modelforge serve``: the store over the KServe v2 / Open Inference Protocol.

The options come in groups (frozen dataclasses, see :mod:`modelforge.cli.options`), each
``build()`` giving :class:`~modelforge.serve.options.ServeOptions` keyword arguments:
:class:`ListenArgs` (addresses), :class:`CapacityArgs` (instances, threads, batching,
queueing), :class:`RequestArgs` (timeouts, sizes, auth, TLS), :class:`ServeSessionArgs`
(providers, warm-up) and :class:`RunArgs` (alias polling, logging).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelforge.cli.common import (
    JsonOpt,
    OptLevelOpt,
    ProviderOpt,
    ProviderOptionOpt,
    global_options,
    parse_key_values,
    run,
)
from modelforge.cli.options import option_groups

if TYPE_CHECKING:
    from modelforge.engine.session import SessionConfig
    from modelforge.render import Renderer
    from modelforge.serve.server import ReadyInfo

TOKEN_ENV = "MODELFORGE_SERVE_TOKEN"


@dataclass(frozen=True)
class ListenArgs:
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback unless you ask).")
    ] = "127.0.0.1"
    port: Annotated[int, typer.Option("--port", help="HTTP port; 0 = any free port.")] = 8000
    grpc_port: Annotated[
        int | None,
        typer.Option("--grpc-port", metavar="N", help="Also serve gRPC on port N (0 = any)."),
    ] = None

    def build(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "grpc_port": self.grpc_port}


@dataclass(frozen=True)
class CapacityArgs:
    instances: Annotated[
        int, typer.Option("--instances", metavar="N", help="Sessions per model version.")
    ] = 1
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            metavar="N",
            help="Intra-op threads per session (default cores/N, or 1 for a model whose "
            "full batch runs under 1 ms).",
        ),
    ] = None
    batching: Annotated[
        str,
        typer.Option(
            "--batching", help="Dynamic batching: auto (when dim 0 is symbolic), on or off."
        ),
    ] = "auto"
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", metavar="ROWS", help="Rows per merged run.")
    ] = 256
    max_queue_delay: Annotated[
        int,
        typer.Option(
            "--max-queue-delay",
            metavar="US",
            help="Microseconds a contended batch may wait for more rows.",
        ),
    ] = 0
    max_queue: Annotated[
        int,
        typer.Option("--max-queue", metavar="N", help="Queued requests per version before 503."),
    ] = 256
    inline_below: Annotated[
        int,
        typer.Option(
            "--inline-below",
            metavar="US",
            help="A lone request of a model whose runs take under US µs runs on the event "
            "loop (0 = always in instance threads).",
        ),
    ] = 0
    loop_cpu: Annotated[
        str,
        typer.Option(
            "--loop-cpu",
            metavar="N|auto|off",
            help="Run the event loop and instance threads on CPU N, or on the least crowded "
            "CPU (auto); off: wherever the kernel puts them (Linux; onnxruntime's own "
            "threads keep every CPU).",
        ),
    ] = "auto"

    def build(self) -> dict[str, Any]:
        """ServeOptions keywords; ``--batching`` checked here, the numbers by
        ``ServeOptions.validate``."""
        from modelforge.errors import UsageError
        from modelforge.text import escape, truncate

        if self.batching not in ("auto", "on", "off"):
            raise UsageError(f"--batching must be auto, on or off (got '{self.batching}')")
        cpu = self.loop_cpu.strip().lower()
        if not (cpu in ("auto", "off") or (cpu.isascii() and cpu.isdigit())):
            got = truncate(escape(self.loop_cpu), 40)
            raise UsageError(f"--loop-cpu must be a CPU number, auto or off (got '{got}')")
        return {
            "instances": self.instances,
            "threads": self.threads,
            "batching": self.batching,
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_us": self.max_queue_delay,
            "max_queue": self.max_queue,
            "inline_below_us": self.inline_below,
            "loop_cpu": None if cpu == "off" else cpu if cpu == "auto" else int(cpu),
        }


@dataclass(frozen=True)
class RequestArgs:
    request_timeout: Annotated[
        float,
        typer.Option("--request-timeout", metavar="S", help="Per-request timeout (0 = none)."),
    ] = 30.0
    read_timeout: Annotated[
        float,
        typer.Option(
            "--read-timeout",
            metavar="S",
            help="A request's headers and body must arrive within S s of its first byte "
            "(else 408; 0 = no bound).",
        ),
    ] = 60.0
    grpc_idle_timeout: Annotated[
        float,
        typer.Option(
            "--grpc-idle-timeout",
            metavar="S",
            help="Close gRPC connections without calls, and end streams without requests, "
            "after S s (0 = never).",
        ),
    ] = 300.0
    max_request_size: Annotated[
        int,
        typer.Option("--max-request-size", metavar="MB", help="Largest request body (413)."),
    ] = 64
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="T",
            help=f"Require 'Authorization: Bearer T' except on health (or ${TOKEN_ENV}).",
        ),
    ] = None
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", metavar="PEM", help="TLS certificate.")
    ] = None
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", metavar="PEM", help="TLS private key.")
    ] = None

    def build(self) -> dict[str, Any]:
        return {
            "request_timeout_s": self.request_timeout or None,
            "read_timeout_s": self.read_timeout or None,
            "grpc_idle_s": self.grpc_idle_timeout or None,
            "max_request_bytes": self.max_request_size * 1024 * 1024,
            "token": self.token if self.token is not None else os.environ.get(TOKEN_ENV),
            "tls_cert": self.tls_cert,
            "tls_key": self.tls_key,
        }


@dataclass(frozen=True)
class ServeSessionArgs:
    provider: ProviderOpt = None
    provider_option: ProviderOptionOpt = None
    opt_level: OptLevelOpt = None
    no_warmup: Annotated[
        bool, typer.Option("--no-warmup", help="Skip warm-up runs before ready.")
    ] = False

    def config(self) -> SessionConfig:
        from modelforge.engine.session import SessionConfig

        return SessionConfig(
            providers=self.provider or None,
            provider_options=parse_key_values(self.provider_option, "--provider-option"),
            opt_level=self.opt_level,
        )

    def build(self) -> dict[str, Any]:
        return {"session": self.config(), "warmup": not self.no_warmup}


@dataclass(frozen=True)
class RunArgs:
    poll_interval: Annotated[
        float,
        typer.Option("--poll-interval", metavar="S", help="Re-read store aliases every S s."),
    ] = 1.0
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log each request on stderr.")
    ] = False
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No ready line on stderr.")] = False

    def build(self, quiet: bool) -> dict[str, Any]:
        """``quiet``: the global --quiet, which also silences the ready line."""
        return {
            "poll_interval_s": self.poll_interval,
            "access_log": self.access_log,
            "quiet": self.quiet or quiet,
        }


@option_groups(
    listen=ListenArgs,
    capacity=CapacityArgs,
    requests=RequestArgs,
    session=ServeSessionArgs,
    runtime=RunArgs,
)
def serve_cmd(
    ctx: typer.Context,
    listen: ListenArgs,
    capacity: CapacityArgs,
    requests: RequestArgs,
    session: ServeSessionArgs,
    runtime: RunArgs,
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Store references (NAME, NAME:3, NAME:prod) or .onnx paths; none = the whole "
            "store.",
            metavar="[MODEL]...",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Serve a single .onnx file under this name.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Serve models over the KServe v2 / Open Inference Protocol (HTTP, optional gRPC).

    Example: modelforge serve iris --port 8000
    """
    with run(ctx, "serve", json_out) as out:
        from modelforge.serve.options import ServeOptions
        from modelforge.serve.server import check_extra, serve

        check_extra()
        opts = ServeOptions(
            **listen.build(), **capacity.build(), **requests.build(), **session.build(),
            **runtime.build(global_options(ctx).quiet), name=name, json_ready=json_out,
        )  # fmt: skip
        code = serve(models or [], opts, on_ready=_ready_printer(out, json_out, opts.quiet))
        if code:
            raise typer.Exit(code)


def _ready_printer(out: Renderer, json_out: bool, quiet: bool) -> Callable[[ReadyInfo], None]:
    """What serve() calls once the server listens: the JSON envelope (one compact line on
    stdout, so that scripts can read it with readline()) and/or the ready line on stderr."""

    def on_ready(info: ReadyInfo) -> None:
        if json_out:
            from modelforge.render import ENVELOPE_VERSION, to_jsonable

            envelope = {
                "modelforge": ENVELOPE_VERSION,
                "command": "serve",
                "status": "ok",
                "result": to_jsonable(info),
                "error": None,
                "warnings": [],
            }
            sys.stdout.write(json.dumps(envelope, separators=(",", ":")) + "\n")
            sys.stdout.flush()
            out.emitted = True
        if not quiet:
            sys.stderr.write(info.line() + "\n")
            sys.stderr.flush()

    return on_ready


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
