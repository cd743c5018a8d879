"""Inputs checked against the model's ports before onnxruntime sees them.

onnxruntime's own messages name no input ("Unexpected input data type"); these do, and say
what the model expects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelforge.serve.protocol import bad_request, clip

if TYPE_CHECKING:
    import numpy as np

    from modelforge.serve.models import Port


def expected_shape(port: Port) -> str:
    return "[" + ", ".join("-1" if d < 0 else str(d) for d in port.shape) + "]"


def check_tensor(port: Port, arr: np.ndarray) -> None:
    """Rank and fixed dimensions of one decoded input (datatype is checked when decoding)."""
    if not port.dims_declared:
        return
    if arr.ndim != len(port.shape):
        raise bad_request(
            f"input '{clip(port.name)}' has shape {list(arr.shape)} (rank {arr.ndim}); the "
            f"model expects {port.datatype} {expected_shape(port)} (rank {len(port.shape)})"
        )
    for axis, (got, want) in enumerate(zip(arr.shape, port.shape, strict=True)):
        if want >= 0 and got != want:
            raise bad_request(
                f"dimension {axis} of input '{clip(port.name)}' is {got}; the model expects "
                f"{want} (shape {expected_shape(port)})"
            )


def check_together(feeds: dict[str, np.ndarray], inputs: list[Port]) -> int:
    """Inputs sharing a symbolic dimension name must agree on it; returns the row count."""
    seen: dict[str, tuple[str, int]] = {}
    for port in inputs:
        arr = feeds.get(port.name)
        if arr is None:
            continue
        for axis, sym in enumerate(port.symbols):
            if sym is None or axis >= arr.ndim:
                continue
            size = int(arr.shape[axis])
            if sym in seen and seen[sym][1] != size:
                other, n = seen[sym]
                raise bad_request(
                    f"dimension '{clip(sym)}' is {n} in input '{clip(other)}' but {size} in "
                    f"input '{clip(port.name)}'; they must match"
                )
            seen.setdefault(sym, (port.name, size))
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1
