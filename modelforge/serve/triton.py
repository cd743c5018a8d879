"""Triton-compatible model metadata and ModelConfig synthesized from the ONNX graph.

perf_analyzer requires ``GET .../config`` to answer 200, and ``max_batch_size`` (with dims
given without the batch dimension) to send more than one row per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelforge.serve.protocol import PLATFORM, triton_type

if TYPE_CHECKING:
    from modelforge.serve.models import Port
    from modelforge.serve.options import ServeOptions
    from modelforge.serve.registry import ServedModel, ServedVersion


def model_metadata(model: ServedModel, sv: ServedVersion) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(v) for v in model.available],
        "platform": PLATFORM,
        "inputs": [p.metadata() for p in sv.opened.inputs],
        "outputs": [p.metadata() for p in sv.opened.outputs],
    }


def _tensor(port: Port, batched: bool) -> dict[str, Any]:
    dims = port.shape[1:] if batched else port.shape
    entry: dict[str, Any] = {
        "name": port.name,
        "data_type": triton_type(port.datatype),
        "dims": dims or [1],
    }
    if not dims:  # Triton spells a per-row scalar as dims [1] reshaped to []
        entry["reshape"] = {"shape": []}
    return entry


def model_config(sv: ServedVersion, options: ServeOptions) -> dict[str, Any]:
    from modelforge.serve.models import batch_problem

    ins, outs = sv.opened.inputs, sv.opened.outputs
    # max_batch_size > 0 tells Triton clients that every input and output has one shared
    # leading batch dimension (left out of dims): only true when batch_problem finds none
    batched = batch_problem(ins, outs) is None
    config: dict[str, Any] = {
        "name": sv.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [str(sv.version)]}},
        "max_batch_size": options.max_batch_size if batched else 0,
        "input": [_tensor(p, batched) for p in ins],
        "output": [_tensor(p, batched) for p in outs],
        "instance_group": [
            {"name": f"{sv.name}_0", "kind": "KIND_CPU", "count": len(sv.opened.sessions)}
        ],
        "default_model_filename": sv.opened.path.name,
        "parameters": {
            "intra_op_thread_count": {"string_value": str(sv.opened.threads)},
        },
    }
    if sv.batching and sv.batcher.batching:  # the batcher turns it off on misaligned rows
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": options.max_queue_delay_us,
            "preserve_ordering": False,
            "default_queue_policy": {
                "max_queue_size": options.max_queue,
                "timeout_action": "REJECT",
                "default_timeout_microseconds": int((options.request_timeout_s or 0) * 1e6),
            },
        }
    return config
