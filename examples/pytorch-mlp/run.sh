#!/bin/sh
# A PyTorch MLP exported with torch.onnx.export (dynamic batch axis, opset 17): prove parity
# with PyTorch's own outputs, then predict. Runs without torch: model.onnx is committed.
set -eu
cd "$(dirname "$0")"

# 1. Conversion check: run model.onnx on the inputs saved by export.py and compare every output
#    with what PyTorch computed for them (default tolerances: --rtol 1e-3 --atol 1e-5).
modelforge validate model.onnx --inputs inputs.npz --expected expected.npz

# 2. Batch prediction from the NPZ (keys are input names): 8 rows, since the batch axis is dynamic.
modelforge predict model.onnx inputs.npz --outputs probabilities

# 3. A single prediction from inline JSON, printed as one JSON record.
modelforge predict model.onnx --data '{"features": [[0.5, -1.2, 0.3, 0.8, -0.5, 1.0]]}'
