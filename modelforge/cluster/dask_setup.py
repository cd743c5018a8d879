"""Reaching a Dask cluster before any work: the ``distributed`` import with its install
hint, ``--cluster`` addresses and scheduler files checked before Dask sees them, and the
environment of an embedded LocalCluster's workers (set, then put back)."""

from __future__ import annotations

import os
from typing import Any

from modelforge.errors import RuntimeFailure, UsageError
from modelforge.text import escape, safe


def import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise UsageError(
            "--cluster needs Dask's distributed package, which is not installed",
            hint="pip install 'modelforge[dask]'",
            code="dask_missing",
        ) from None
    return distributed


def spawn_environ(config: Any) -> dict[str, Any]:
    """Dask's pre-spawn environment for our embedded workers, without its default
    ``MALLOC_TRIM_THRESHOLD_=65536``: setting it turns off glibc's dynamic mmap threshold,
    so every buffer over 128 KiB (a batch's arrays, Arrow buffers) is a fresh mmap with its
    page faults (measured on the MLP, 8 parts: 23,000 minor faults against 3,800 for the
    same parts in one warm process; in one process the setting costs ~5% more CPU). Any
    other value (the user's) is kept."""
    env = dict(config.get("distributed.nanny.pre-spawn-environ", None) or {})
    if str(env.get("MALLOC_TRIM_THRESHOLD_", "")) == "65536":
        del env["MALLOC_TRIM_THRESHOLD_"]
    return env


SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")  # Dask's network address schemes
MAX_LOCAL_PER_CORE = 4  # local:N beyond N = 4 x cores is a typo, not a plan


def check_address(target: str, given: str) -> None:
    """``tcp://HOST:PORT`` (or another of :data:`SCHEMES`), checked before Dask sees it:
    Dask asserts on a missing host and hangs 20 s closing a client that never connected."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(target)
        ok = (
            parts.scheme in SCHEMES
            and bool(parts.hostname)
            and parts.port is not None
            and parts.port > 0
            and not (parts.path or parts.query or parts.fragment or parts.username)
            and parts.password is None
        )
    except ValueError:  # a bad port, an unclosed [IPv6 bracket
        ok = False
    if not ok:
        looks_like_file = "://" not in given and (os.sep in given or given.endswith(".json"))
        if looks_like_file and not os.path.exists(given):
            raise UsageError(
                f"--cluster scheduler file '{escape(given)}' does not exist",
                hint="pass the file written by 'dask scheduler --scheduler-file FILE' (the "
                "same path as the scheduler sees it), or tcp://HOST:PORT",
                code="invalid_option",
            )
        raise UsageError(
            f"--cluster '{escape(given)}' is not tcp://HOST:PORT, tls://HOST:PORT, a "
            "scheduler file, local, local:N or auto",
            hint="e.g. --cluster tcp://scheduler:8786",
            code="invalid_option",
        )
    check_transport(parts.scheme, given)


def check_transport(scheme: str, given: str) -> None:
    """What a scheme needs before Dask tries it: Dask fails a tls:// address without
    certificates, and a ucx:// one without its package, with a TypeError, then hangs
    20 s closing the half-made client."""
    import importlib.util

    if scheme in ("tls", "wss"):
        from distributed.security import Security

        if Security().get_connection_args("client").get("ssl_context") is None:
            raise UsageError(
                f"--cluster '{escape(given)}' needs TLS certificates in Dask's configuration",
                hint="set distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and "
                ".key (or DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ...); see docs/cluster.md",
                code="invalid_option",
            )
    if scheme == "ucx" and not any(
        importlib.util.find_spec(m) is not None for m in ("ucp", "distributed_ucxx")
    ):
        raise UsageError(
            f"--cluster '{escape(given)}' needs UCX support, which is not installed",
            hint="pip install distributed-ucxx (and UCX itself), or use tcp://HOST:PORT",
            code="invalid_option",
        )


def scheduler_file_address(path: str) -> str:
    """The scheduler's address from a file written by ``dask scheduler --scheduler-file``."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            address = json.load(fh).get("address")
    except (OSError, ValueError, RecursionError, AttributeError):
        address = None
    if not isinstance(address, str):
        raise UsageError(
            f"--cluster scheduler file '{escape(path)}' is not a JSON object with an 'address'",
            hint="pass the file written by 'dask scheduler --scheduler-file FILE'",
            code="invalid_option",
        )
    return address


def probe_scheduler(target: str, timeout: float, source: str = "") -> None:
    """Ask ``target`` who it is (Dask's ``identity``) within ``timeout`` seconds, before a
    ``Client`` is made: Dask bounds only the TCP connect, so a port where another server
    listens (an HTTP server) made the client wait for ever, and one that answers bytes
    Dask misreads made it fail with a MemoryError, then hang 20 s closing. Runs in its own
    thread and event loop (a caller may be inside one: a notebook)."""
    import asyncio
    import threading

    box: dict[str, Any] = {}

    async def ask() -> Any:
        from distributed.comm import connect
        from distributed.security import Security

        comm = await connect(target, timeout=timeout, **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def main() -> None:
        try:
            box["info"] = asyncio.run(asyncio.wait_for(ask(), timeout + 2))
        except BaseException as exc:  # reported by the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=main, name="modelforge-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5)  # a name lookup that hangs is not cancelled by wait_for
    err, info = box.get("error"), box.get("info")
    where = f"the Dask scheduler at '{escape(target)}'{source}"
    if thread.is_alive() or isinstance(err, (OSError, TimeoutError)):
        # Dask's connect times out with a message; only the handshake's wait has none
        why = "no answer (the name lookup or connection hangs)"
        if err is not None:
            why = safe(str(err).splitlines()[0], 160) if str(err) else (
                "it accepted the connection but gave no answer in Dask's protocol (a stuck "
                "scheduler, or another program on that port)"
            )  # fmt: skip
        raise RuntimeFailure(
            f"cannot reach {where} within {timeout:g} s: {why}",
            hint="check that the scheduler runs and the address/port is reachable",
            code="cluster_unreachable",
        )
    if isinstance(err, KeyboardInterrupt):
        raise err
    kind = info.get("type") if isinstance(info, dict) else None
    if err is not None or not isinstance(kind, str):
        raise RuntimeFailure(
            f"'{escape(target)}'{source} answers, but not as a Dask scheduler (another "
            "program listens on that port, or a TLS/plain-TCP mix-up)",
            hint="pass the address 'dask scheduler' prints (tcp://HOST:8786 by default), or "
            "its --scheduler-file",
            code="cluster_unreachable",
        )
    if kind in ("Worker", "Nanny"):
        raise RuntimeFailure(
            f"'{escape(target)}'{source} is a Dask {escape(kind).lower()}, not the scheduler",
            hint="pass the scheduler's address (the one the workers were started with), or "
            "its --scheduler-file",
            code="cluster_unreachable",
        )


def restore_environ(saved: dict[str, str | None]) -> None:
    """The keys of ``saved`` as they were (None: absent); other keys are left alone."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        elif os.environ.get(key) != value:
            os.environ[key] = value
