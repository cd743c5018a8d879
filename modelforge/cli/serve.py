"""``modelforge serve``: the store over the KServe v2 / Open Inference Protocol."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from modelforge.serve.server import ReadyInfo

TOKEN_ENV = "MODELFORGE_SERVE_TOKEN"


def serve_cmd(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Store references (NAME, NAME:3, NAME:prod) or .onnx paths; none = the whole "
            "store.",
            metavar="[MODEL]...",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback unless you ask).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port; 0 = any free port.")] = 8000,
    grpc_port: Annotated[
        int | None,
        typer.Option("--grpc-port", metavar="N", help="Also serve gRPC on port N (0 = any)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Serve a single .onnx file under this name.")
    ] = None,
    instances: Annotated[
        int, typer.Option("--instances", metavar="N", help="Sessions per model version.")
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", metavar="N", help="Intra-op threads per session (default cores/N)."
        ),
    ] = None,
    batching: Annotated[
        str,
        typer.Option(
            "--batching", help="Dynamic batching: auto (when dim 0 is symbolic), on or off."
        ),
    ] = "auto",
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", metavar="ROWS", help="Rows per merged run.")
    ] = 64,
    max_queue_delay: Annotated[
        int,
        typer.Option(
            "--max-queue-delay",
            metavar="US",
            help="Microseconds a contended batch may wait for more rows.",
        ),
    ] = 0,
    max_queue: Annotated[
        int,
        typer.Option("--max-queue", metavar="N", help="Queued requests per version before 503."),
    ] = 256,
    inline_below: Annotated[
        int,
        typer.Option(
            "--inline-below",
            metavar="US",
            help="A lone request of a model whose runs take under US µs runs on the event "
            "loop (0 = always in instance threads).",
        ),
    ] = 300,
    request_timeout: Annotated[
        float,
        typer.Option("--request-timeout", metavar="S", help="Per-request timeout (0 = none)."),
    ] = 30.0,
    max_request_size: Annotated[
        int,
        typer.Option("--max-request-size", metavar="MB", help="Largest request body (413)."),
    ] = 64,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="T",
            help=f"Require 'Authorization: Bearer T' except on health (or ${TOKEN_ENV}).",
        ),
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", metavar="PEM", help="TLS certificate.")
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option("--tls-key", metavar="PEM", help="TLS private key.")
    ] = None,
    provider: ProviderOpt = None,
    provider_option: ProviderOptionOpt = None,
    opt_level: OptLevelOpt = None,
    no_warmup: Annotated[
        bool, typer.Option("--no-warmup", help="Skip warm-up runs before ready.")
    ] = False,
    poll_interval: Annotated[
        float,
        typer.Option("--poll-interval", metavar="S", help="Re-read store aliases every S s."),
    ] = 1.0,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log each request on stderr.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No ready line on stderr.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Serve models over the KServe v2 / Open Inference Protocol (HTTP, optional gRPC).

    Example: modelforge serve iris --port 8000
    """
    with run(ctx, "serve", json_out) as out:
        from modelforge.engine.session import SessionConfig
        from modelforge.serve.options import ServeOptions
        from modelforge.serve.server import check_extra, serve

        check_extra()
        if batching not in ("auto", "on", "off"):
            from modelforge.errors import UsageError

            raise UsageError(f"--batching must be auto, on or off (got '{batching}')")
        quiet = quiet or global_options(ctx).quiet
        opts = ServeOptions(
            host=host,
            port=port,
            grpc_port=grpc_port,
            name=name,
            instances=instances,
            threads=threads,
            batching=batching,  # type: ignore[arg-type]
            max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay,
            max_queue=max_queue,
            inline_below_us=inline_below,
            request_timeout_s=request_timeout or None,
            max_request_bytes=max_request_size * 1024 * 1024,
            token=token or os.environ.get(TOKEN_ENV) or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
            access_log=access_log,
            quiet=quiet,
            json_ready=json_out,
            poll_interval_s=poll_interval,
            warmup=not no_warmup,
            session=SessionConfig(
                providers=provider or None,
                provider_options=parse_key_values(provider_option, "--provider-option"),
                opt_level=opt_level,
            ),
        )

        def on_ready(info: ReadyInfo) -> None:
            if json_out:  # one compact line, so that scripts can read it with readline()
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

        code = serve(models or [], opts, on_ready=on_ready)
        if code:
            raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
