"""State shared by the checks that run in the guarded child, and message helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.model.validate import Check, ValidateOptions
from modelforge.text import escape, truncate

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = ["Check", "Ctx", "ORT_SOURCE", "one_line", "opsets"]


@dataclass
class Ctx:
    path: str
    opts: ValidateOptions
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


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
ORT_SOURCE = re.compile(r"/onnxruntime_src/\S+:\d+ (?:[^()]*\([^()]*\)(?: const)? )?")


def one_line(exc: BaseException, limit: int = 400) -> str:
    """One escaped line; onnxruntime's prefix and C++ source locations removed."""
    text = " ".join((str(exc).strip() or type(exc).__name__).split())
    text = ORT_SOURCE.sub("", _ORT_PREFIX.sub("", text))
    return truncate(escape(text), limit)


def opsets(model: ModelProto) -> dict[str, int]:
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
