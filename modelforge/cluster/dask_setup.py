"""Reaching a Dask cluster before any work: the ``distributed`` import with its install
hint, ``--cluster`` addresses and scheduler files checked before Dask sees them, and the
environment of an embedded LocalCluster's workers (set, then put back)."""

from __future__ import annotations

import os
from typing import Any

from modelforge.errors import UsageError
from modelforge.text import escape


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


def restore_environ(saved: dict[str, str | None]) -> None:
    """The keys of ``saved`` as they were (None: absent); other keys are left alone."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        elif os.environ.get(key) != value:
            os.environ[key] = value
