"""State shared by the checks that run in the guarded child, and message helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.model.checks.types import Check, ValidateOptions
from modelforge.text import truncate

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["Check", "Ctx", "one_line", "opsets", "raised_by_dependency"]


@dataclass
class Ctx:
    path: str
    opts: ValidateOptions
    expected_sha256: str | None = None  # the bytes the parent read (refused if changed)
    results: dict[str, Check] = field(default_factory=dict)
    model: Any = None
    model_bytes: bytes = b""
    has_external: bool = False
    external_files: list[Any] = field(default_factory=list)
    schema: Any = None
    session: Any = None
    feeds: dict[str, Any] | None = None
    outputs: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def one_line(exc: BaseException, limit: int = 400) -> str:
    """One escaped line: onnxruntime's prefix and C++ source locations removed (the one
    cleaner, :func:`modelforge.engine.session.first_line`), cut at ``limit``."""
    from modelforge.engine.session import first_line

    return truncate(first_line(exc), limit)


def opsets(model: ModelProto) -> dict[str, int]:
    """Opset imports in the one stable order (``ai.onnx`` first)."""
    from modelforge.model.opset import opset_imports

    return opset_imports(model)


_DEPENDENCIES = frozenset({"onnx", "onnxruntime", "google", "numpy", "ml_dtypes"})


def raised_by_dependency(exc: BaseException) -> bool:
    """True when onnx/onnxruntime/protobuf/numpy raised ``exc`` (its type comes from them, or
    the innermost Python frame is theirs): a problem of the model they were processing.
    Anything raised by ModelForge's own code is a bug and must not become a failed check."""
    if type(exc).__module__.split(".")[0] in _DEPENDENCIES:
        return True
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    module = str(last.tb_frame.f_globals.get("__name__", ""))
    return module.split(".")[0] in _DEPENDENCIES
