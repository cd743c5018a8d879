"""Server options (one frozen dataclass shared by the CLI, the ASGI factory and serve())."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from modelforge.errors import UsageError

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None
    name: str | None = None  # serve a single .onnx path under this name
    instances: int = 1  # sessions per model version
    threads: int | None = None  # intra-op threads per session; None = cores // instances
    batching: Literal["auto", "on", "off"] = "auto"  # auto: on when dim 0 is symbolic
    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    max_queue: int = 256  # queued requests per model version before 503
    inline_below_us: int = 300  # lone requests of models faster than this run on the loop
    request_timeout_s: float | None = 30.0
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
        need(self.max_request_bytes >= 1024, "--max-request-size must be at least 1 KiB")
        need(
            self.request_timeout_s is None or self.request_timeout_s > 0,
            "--request-timeout must be more than 0 seconds",
        )
        need(
            (self.tls_cert is None) == (self.tls_key is None),
            "--tls-cert and --tls-key go together",
            "pass both, or neither",
        )
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

    @property
    def intra_threads(self) -> int:
        cores = os.cpu_count() or 1
        return self.threads or max(1, cores // self.instances)
