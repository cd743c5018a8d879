"""An MLServer custom runtime serving ONNX models with onnxruntime (a benchmark peer).

``mlserver_onnx.py --port P --workdir DIR NAME=PATH ...`` writes settings.json and one
model-settings.json per model into DIR (host 127.0.0.1, no parallel workers, no adaptive
batching), then runs ``mlserver start DIR`` from the peer venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        so = ort.SessionOptions()
        so.intra_op_num_threads = os.cpu_count() or 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            self.settings.parameters.uri, so, providers=["CPUExecutionProvider"]
        )
        self.names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        values = self.session.run(self.names, feeds)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name=n, payload=np.asarray(v))
                for n, v in zip(self.names, values, strict=True)
            ],
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy(__file__, work / "onnx_runtime.py")
    settings = {
        "host": "127.0.0.1",
        "http_port": args.port,
        "grpc_port": args.port + 1,
        "metrics_port": args.port + 2,
        "parallel_workers": 0,
        "debug": False,
    }
    (work / "settings.json").write_text(json.dumps(settings))
    for item in args.models:
        name, path = item.split("=", 1)
        (work / name).mkdir()
        model = {
            "name": name,
            "implementation": "onnx_runtime.OnnxRuntime",
            "parameters": {"uri": str(Path(path).absolute())},
        }
        (work / name / "model-settings.json").write_text(json.dumps(model))
    os.chdir(work)
    mlserver = Path(sys.executable).parent / "mlserver"
    os.execv(str(mlserver), [str(mlserver), "start", str(work)])


if __name__ == "__main__":
    main()
