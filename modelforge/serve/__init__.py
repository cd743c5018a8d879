"""``modelforge serve``: the local store over the KServe v2 / Open Inference Protocol.

Layout (a front like ``cli/``; it calls the same core):

* :mod:`.protocol`  datatypes, HTTP errors, the wire-level constants;
* :mod:`.models`    the one bridge to the core: open a model version -> sessions + schema;
* :mod:`.codec`     OIP request decoding (JSON and binary) and response encoding;
* :mod:`.checks`    inputs checked against the schema before onnxruntime sees them;
* :mod:`.batcher`   dynamic batching over N session instances, off the event loop;
* :mod:`.registry`  which names/versions/aliases are served; live alias polling, draining;
* :mod:`.stats`     Triton-style statistics and Prometheus metrics;
* :mod:`.triton`    ModelConfig synthesized from the ONNX graph;
* :mod:`.app`       the ASGI application (routing, limits, auth);
* :mod:`.grpc_server` the gRPC GRPCInferenceService (optional ``grpc`` extra);
* :mod:`.http_protocol` uvicorn's httptools protocol: one write per answer, header limits,
  disconnect callbacks;
* :mod:`.affinity`  ``--loop-cpu``: the Python threads on one CPU;
* :mod:`.server`    the uvicorn runner and the supervisor process.

Nothing here is imported by ``modelforge --help``. Public API: :func:`create_app`,
:func:`serve` and :class:`ServeOptions` (also ``modelforge.create_app``,
``modelforge.serve_models``, ``modelforge.ServeOptions``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = {
    "create_app": "modelforge.serve.app",
    "serve": "modelforge.serve.server",
    "ServeOptions": "modelforge.serve.options",
}


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'modelforge.serve' has no attribute {name!r}")
    return getattr(import_module(module), name)
