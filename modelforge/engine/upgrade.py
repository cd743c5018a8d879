"""In-memory opset upgrade for models whose opset is too old for onnxruntime's kernels.

The conversion itself is :func:`modelforge.model.opset.convert_version` (the one wrapper
around ``onnx.version_converter``, shared with ``modelforge convert``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from modelforge.engine.session import Session, SessionConfig, create_session
from modelforge.errors import InvalidModelError, ModelForgeError
from modelforge.log import warn
from modelforge.model.opset import default_opset

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["CANDIDATES", "create_upgrading", "default_opset"]

CANDIDATES = (7, 9, 11, 13, 15, 17, 19, 21)


def create_upgrading(
    model_bytes: bytes,
    model: ModelProto,
    cfg: SessionConfig,
    *,
    folder: str | os.PathLike[str],
    no_upgrade: bool = False,
) -> tuple[Session, int | None]:
    """Create a session; on ``opset_too_old`` upgrade to the lowest opset that runs.

    Returns the session and the opset it was upgraded to (None when not upgraded).
    """
    try:
        return create_session(model_bytes, cfg, external_data_dir=folder), None
    except InvalidModelError as exc:
        if exc.code != "opset_too_old" or no_upgrade:
            raise
        first = exc
    from onnx import defs

    from modelforge.model.opset import convert_version

    current = default_opset(model)
    newest = defs.onnx_opset_version()
    for target in [t for t in CANDIDATES if current < t <= newest]:
        try:
            converted = convert_version(model, target)
        except Exception:  # the converter raises plain RuntimeError/ValueError
            continue
        try:
            session = create_session(converted.SerializeToString(), cfg, external_data_dir=folder)
        except ModelForgeError as exc:
            if exc.code == "opset_too_old":
                continue
            raise
        warn(
            f"the model's opset {current} is too old for this onnxruntime; upgraded it in "
            f"memory to opset {target} (save it with 'modelforge convert MODEL --opset "
            f"{target} -o new.onnx')"
        )
        return session, target
    raise InvalidModelError(
        f"{first.message}; upgrading the opset in memory did not help",
        hint="re-export the model with a newer opset",
        code="opset_too_old",
    )
