"""KServe Python ModelServer serving ONNX models with onnxruntime (a benchmark peer).

Run with the peer venv's python: ``kserve_onnx.py --port P NAME=PATH [NAME=PATH ...]``.
Same session options as modelforge serve (intra-op threads = cores, spinning off). KServe
hard-codes host 0.0.0.0; this launcher forces 127.0.0.1. ``response_id`` is always set
(KServe's response validation turns a missing one into a 500).
"""

from __future__ import annotations

import argparse
import os
import uuid

import numpy as np
import onnxruntime as ort
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

_Config = uvicorn.Config


class _LoopbackConfig(_Config):  # type: ignore[misc]
    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


uvicorn.Config = _LoopbackConfig  # type: ignore[misc]
import kserve.protocol.rest.server as _rest  # noqa: E402

_rest.uvicorn.Config = _LoopbackConfig

_DT = {np.dtype("float32"): "FP32", np.dtype("float64"): "FP64", np.dtype("int64"): "INT64"}


def _session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class OnnxModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.session = _session(path)
        self.names = [o.name for o in self.session.get_outputs()]
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        feeds = {inp.name: inp.as_numpy() for inp in payload.inputs}
        values = self.session.run(self.names, feeds)
        binary = bool(payload.use_binary_outputs)
        outputs = []
        for name, value in zip(self.names, values, strict=True):
            out = InferOutput(name=name, shape=list(value.shape), datatype=_DT[value.dtype])
            out.set_data_from_numpy(value, binary_data=binary)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=binary,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    models = [OnnxModel(*item.split("=", 1)) for item in args.models]
    ModelServer(http_port=args.port, enable_grpc=False, workers=1).start(models)


if __name__ == "__main__":
    main()
