"""Server options (one frozen dataclass shared by the CLI, the ASGI factory and serve())."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from modelforge.errors import UsageError

MiB = 1024 * 1024
TOKEN_ENV = "MODELFORGE_SERVE_TOKEN"
# RFC 3986 unreserved characters: a name that needs no escaping in /v2/models/NAME/infer
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]{1,128}")


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None
    name: str | None = None  # serve a single .onnx path under this name
    instances: int = 1  # sessions per model version
    threads: int | None = None  # intra-op threads per session; None = cores // instances
    batching: Literal["auto", "on", "off"] = "auto"  # auto: on when dim 0 is symbolic
    max_batch_size: int = 256  # 4 requests of 64 rows still merge
    max_queue_delay_us: int = 0
    max_queue: int = 256  # queued requests per model version before 503
    inline_below_us: int = 0  # opt-in: lone requests of models faster than this run on the loop
    loop_cpu: int | str | None = "auto"  # the event loop and instance threads on this CPU,
    # "auto": on the least crowded one (affinity.Mover); None: wherever the kernel puts them
    request_timeout_s: float | None = 30.0
    read_timeout_s: float | None = 60.0  # a request's head + body must arrive within this (408)
    grpc_idle_s: float | None = 300.0  # gRPC: connections without calls, streams without requests
    max_request_bytes: int = 64 * MiB
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    access_log: bool = False
    quiet: bool = False
    json_ready: bool = False
    poll_interval_s: float = 1.0
    warmup: bool = True
    shutdown_timeout_s: float = 8.0
    session: Any = None  # engine.session.SessionConfig (providers, opt level)
    store: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> ServeOptions:
        def need(ok: bool, msg: str, hint: str | None = None) -> None:
            if not ok:
                raise UsageError(msg, hint=hint, code="invalid_option")

        need(0 <= self.port <= 65535, f"--port {self.port} is not a TCP port (0-65535)")
        need(
            self.grpc_port is None or 0 <= self.grpc_port <= 65535,
            f"--grpc-port {self.grpc_port} is not a TCP port (0-65535)",
        )
        need(self.instances >= 1, "--instances must be at least 1")
        need(self.max_batch_size >= 1, "--max-batch-size must be at least 1")
        need(self.max_queue_delay_us >= 0, "--max-queue-delay must be 0 or more microseconds")
        need(self.max_queue >= 1, "--max-queue must be at least 1")
        need(self.inline_below_us >= 0, "--inline-below must be 0 or more microseconds")
        need(
            self.loop_cpu in (None, "auto") or isinstance(self.loop_cpu, int),
            f"--loop-cpu must be a CPU number, auto or off (got {self.loop_cpu!r})",
        )
        if isinstance(self.loop_cpu, int):  # auto is a no-op where affinity cannot be set
            from modelforge.serve.affinity import available

            cpus = available()
            need(cpus is not None, "--loop-cpu needs a platform with CPU affinity (Linux)")
            need(
                cpus is None or self.loop_cpu in cpus,
                f"--loop-cpu {self.loop_cpu} is not a CPU this process may use "
                f"(allowed: {', '.join(map(str, sorted(cpus or [])))})",
            )
        need(self.max_request_bytes >= 1024, "--max-request-size must be at least 1 KiB")
        need(
            self.request_timeout_s is None or self.request_timeout_s > 0,
            "--request-timeout must be more than 0 seconds",
        )
        need(
            self.read_timeout_s is None or self.read_timeout_s > 0,
            "--read-timeout must be more than 0 seconds (0 = no bound)",
        )
        need(
            self.grpc_idle_s is None or self.grpc_idle_s >= 1,
            "--grpc-idle-timeout must be at least 1 second (0 = never)",
        )
        need(
            (self.tls_cert is None) == (self.tls_key is None),
            "--tls-cert and --tls-key go together",
            "pass both, or neither",
        )
        self._check_name()
        self._check_token()
        if self.tls_cert is not None and self.tls_key is not None:
            check_tls(self.tls_cert, self.tls_key)
        cores = os.cpu_count() or 1
        if self.threads is not None:
            need(self.threads >= 1, "--threads must be at least 1")
            need(
                self.threads * self.instances <= cores,
                f"--instances {self.instances} x --threads {self.threads} = "
                f"{self.threads * self.instances} threads, more than the {cores} cores here",
                "lower --threads or --instances: oversubscribed intra-op pools slow every "
                "request down",
            )
        return self

    def _check_name(self) -> None:
        from modelforge.errors import InvalidNameError

        name = self.name
        if name is not None and (not _SEGMENT.fullmatch(name) or name in (".", "..")):
            raise InvalidNameError(
                f"--name {_shown(name)} cannot be a URL path segment, so no client could "
                "reach /v2/models/NAME",
                hint="use 1-128 letters, digits, '.', '_', '~' or '-' (not '.' or '..')",
            )

    def _check_token(self) -> None:
        """An empty or blank token would turn authentication off (or lock everyone out)."""
        env = os.environ.get(TOKEN_ENV)
        if self.token is not None and not self.token.strip():
            raise UsageError(
                "--token is empty or blank, which would leave the server without authentication",
                hint=f"pass a real secret, or leave out --token (and ${TOKEN_ENV})",
                code="invalid_option",
            )
        if self.token is None and env is not None and not env.strip():
            raise UsageError(
                f"${TOKEN_ENV} is set but empty or blank, which would leave the server "
                "without authentication",
                hint="set it to a real secret, or unset it to serve without a token",
                code="invalid_option",
            )
        if self.token is not None and self.token != self.token.strip():
            raise UsageError(
                "the token starts or ends with whitespace, which no 'Authorization: Bearer' "
                "header can carry",
                hint="strip the spaces or newline from --token / $" + TOKEN_ENV,
                code="invalid_option",
            )
        if self.token is not None and not (self.token.isascii() and self.token.isprintable()):
            raise UsageError(  # HTTP headers carry Latin-1, gRPC metadata ASCII: none would match
                "the token has non-ASCII or control characters, which an 'Authorization: "
                "Bearer' header or gRPC metadata cannot carry intact",
                hint="use printable ASCII, e.g. the output of 'openssl rand -hex 32'",
                code="invalid_option",
            )

    @property
    def intra_threads(self) -> int:
        cores = os.cpu_count() or 1
        return self.threads or max(1, cores // self.instances)


def _shown(value: str) -> str:
    from modelforge.text import escape, truncate

    return repr(truncate(escape(value), 80))


def check_tls(cert: str, key: str) -> None:
    """Both files exist, are readable and load together into an SSLContext (before any
    worker starts: a bad file is one line naming it, not a worker traceback)."""
    import ssl

    from modelforge.errors import NotFoundError

    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.path.isfile(path):
            raise NotFoundError(
                f"{flag} {_shown(path)} does not exist (or is not a file)",
                hint=f"give {flag} the path of a PEM file",
                code="file_not_found",
            )
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise UsageError(
                f"{flag} {_shown(path)} cannot be read: {exc.strerror}",
                hint="check the file's permissions",
                code="invalid_option",
            ) from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            cert,
            key,
            password=lambda: b"",  # never prompt on a terminal
        )
    except (ssl.SSLError, ValueError) as exc:
        raise UsageError(
            f"--tls-cert {_shown(cert)} and --tls-key {_shown(key)} do not load as a "
            f"certificate and its private key ({exc.__class__.__name__}: "
            f"{getattr(exc, 'reason', None) or exc})",
            hint="--tls-cert takes the PEM certificate (chain), --tls-key the PEM private key "
            "that matches it; check they are not swapped",
            code="invalid_option",
        ) from None


def library_arguments(models: Any, options: ServeOptions | None) -> tuple[list[str], ServeOptions]:
    """``create_app``/``serve`` arguments checked: ``"iris"`` is one model (not "i", "r",
    ...), every model a str or path, ``options`` a ServeOptions (validated)."""
    from modelforge.errors import check_field_types, check_type

    items = [models] if isinstance(models, (str, os.PathLike)) else list(models or [])
    for m in items:
        check_type(m, (str, os.PathLike), "models", "store references or .onnx paths (a list)")
    if options is not None:
        check_type(options, ServeOptions, "options", "a ServeOptions (or None)")
        check_field_types(options)
    return [os.fspath(m) for m in items], (options or ServeOptions()).validate()
