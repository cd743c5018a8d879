"""In-memory opset upgrade for models whose opset is too old for onnxruntime's kernels."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from modelforge.engine.session import Session, SessionConfig, create_session
from modelforge.errors import InvalidModelError, ModelForgeError
from modelforge.log import warn

if TYPE_CHECKING:
    from onnx import ModelProto

CANDIDATES = (7, 9, 11, 13, 15, 17, 19, 21)


def default_opset(model: ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 0


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
    from onnx import defs, version_converter

    current = default_opset(model)
    newest = defs.onnx_opset_version()
    for target in [t for t in CANDIDATES if current < t <= newest]:
        converted = _convert(model, target, version_converter)
        if converted is None:
            continue
        try:
            session = create_session(converted.SerializeToString(), cfg, external_data_dir=folder)
        except ModelForgeError as exc:
            if exc.code == "opset_too_old":
                continue
            raise
        warn(
            f"the model's opset {current} is too old for this onnxruntime; upgraded it in "
            f"memory to opset {target} (save it with 'modelforge convert MODEL --opset {target}')"
        )
        return session, target
    raise InvalidModelError(
        f"{first.message}; upgrading the opset in memory did not help",
        hint="re-export the model with a newer opset",
        code="opset_too_old",
    )


def _convert(model: ModelProto, target: int, converter: Any) -> ModelProto | None:
    """Convert; if the converter trips over symbolic dims, convert a copy whose symbolic
    dims are pinned to 1 and put the original dims back on the graph inputs/outputs."""
    try:
        return converter.convert_version(model, target)  # type: ignore[no-any-return]
    except Exception:  # the converter raises plain RuntimeError/ValueError
        pass
    pinned = type(model)()
    pinned.CopyFrom(model)
    saved: dict[str, Any] = {}
    for vi in [*pinned.graph.input, *pinned.graph.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            saved[vi.name] = type(vi.type)()
            saved[vi.name].CopyFrom(vi.type)
            for d in vi.type.tensor_type.shape.dim:
                if not d.HasField("dim_value"):
                    d.dim_value = 1
    del pinned.graph.value_info[:]
    try:
        converted = converter.convert_version(pinned, target)
    except Exception:  # the converter raises plain RuntimeError/ValueError
        return None
    for vi in [*converted.graph.input, *converted.graph.output]:
        if vi.name in saved:
            vi.type.CopyFrom(saved[vi.name])
    del converted.graph.value_info[:]
    return converted  # type: ignore[no-any-return]
