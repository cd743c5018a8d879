"""ModelForge's own ASGI application under granian (Rust HTTP server) instead of uvicorn.

Not a peer: a measurement of the HTTP stack `modelforge serve` is built on (the issue asks
for granian to be weighed against uvicorn + httptools). The same ``create_app`` as
``modelforge serve``, its defaults, one granian worker process with one runtime thread and
uvloop; granian comes from its own venv (``pip install granian`` next to modelforge[serve]).

    python benchmarks/peers/granian_modelforge.py --port 8000 lr=/path/lr.onnx ...
"""

from __future__ import annotations

import argparse
import os
import sys


def app_factory():  # imported by granian's worker (--factory)
    from modelforge.serve.app import create_app

    return create_app(os.environ["MF_GRANIAN_MODELS"].split(os.pathsep))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("models", nargs="+", help="NAME=PATH (served under the file's stem)")
    args = ap.parse_args()
    os.environ["MF_GRANIAN_MODELS"] = os.pathsep.join(m.split("=", 1)[1] for m in args.models)
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    granian = os.path.join(os.path.dirname(sys.executable), "granian")
    os.execv(granian, [granian, "--interface", "asgi", "--loop", "uvloop", "--workers", "1",
                       "--runtime-threads", "1", "--host", "127.0.0.1", "--port", str(args.port),
                       "--no-ws", "--factory", "granian_modelforge:app_factory"])  # fmt: skip


if __name__ == "__main__":
    main()
