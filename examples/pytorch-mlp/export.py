"""Export a small PyTorch MLP to ONNX with a dynamic batch axis, plus golden outputs.

Writes, next to this file:
- model.onnx: the MLP (trained briefly on synthetic data), opset 17, input 'features'
  [batch, 6] float32, outputs 'logits' and 'probabilities' [batch, 3] float32; 'batch' is a
  symbolic (dynamic) dimension.
- inputs.npz: 8 rows of inputs, keyed by the model's input name ('features').
- expected.npz: what PyTorch itself computes for those rows, keyed by output name. With
  `modelforge validate model.onnx --inputs inputs.npz --expected expected.npz` they prove that
  the ONNX model gives the same answers as the PyTorch model (the conversion check).

The committed model.onnx and .npz files let the example run without PyTorch. To re-export you
need torch and onnxscript (torch.onnx.export's default exporter uses it):
    pip install torch==2.13.0 onnxscript==0.7.2
Written against torch 2.13.0 (CPU build) and onnxscript 0.7.2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).parent
N_FEATURES = 6
N_CLASSES = 3


class MLP(nn.Module):
    """6 -> 16 -> 16 -> 3 with ReLU; returns logits and softmax probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(N_FEATURES, 16),
            nn.ReLU(),
            nn.Linear(16, 16),
            nn.ReLU(),
            nn.Linear(16, N_CLASSES),
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.body(features)
        return logits, torch.softmax(logits, dim=1)


def train(model: MLP) -> None:
    """A few hundred steps on synthetic data: the class is the largest of 3 linear scores."""
    x = torch.randn(512, N_FEATURES)
    y = (x @ torch.randn(N_FEATURES, N_CLASSES)).argmax(dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x)[0], y)
        loss.backward()
        optimizer.step()
    accuracy = (model(x)[0].argmax(dim=1) == y).float().mean().item()
    print(f"training loss {loss.item():.3f}, accuracy {accuracy:.2f}")


def main() -> None:
    torch.manual_seed(0)
    model = MLP()
    train(model)
    model.eval()  # export inference behaviour (matters for dropout and batch norm)

    # Export with an example batch of 2 rows; the batch dimension is declared dynamic, so the
    # ONNX model accepts any number of rows (the golden check below uses 8).
    example = torch.randn(2, N_FEATURES)
    torch.onnx.export(
        model,
        (example,),
        str(HERE / "model.onnx"),
        input_names=["features"],
        output_names=["logits", "probabilities"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=17,
        external_data=False,  # one self-contained file; fine below 2 GB of weights
    )

    # Golden outputs: inputs the export never saw, run through PyTorch itself.
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(8, N_FEATURES)).astype(np.float32)
    with torch.no_grad():
        logits, probabilities = model(torch.from_numpy(inputs))
    np.savez(HERE / "inputs.npz", features=inputs)
    np.savez(HERE / "expected.npz", logits=logits.numpy(), probabilities=probabilities.numpy())
    print(f"wrote model.onnx, inputs.npz and expected.npz in {HERE}")


if __name__ == "__main__":
    main()
