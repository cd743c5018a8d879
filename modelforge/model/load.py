"""Parsing an ONNX file into a ModelProto, with a useful message when it is something else.

External data is never loaded here: tensors stay as references, checked separately by
:mod:`modelforge.model.external`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from modelforge.errors import InvalidModelError
from modelforge.model.files import read_capped
from modelforge.text import escape

if TYPE_CHECKING:
    from onnx import ModelProto


def sniff(data: bytes) -> tuple[str, str] | None:
    """Recognise common non-ONNX files by their first bytes: (what it is, how to fix)."""
    head = data[:64]
    if head.startswith(b"PK\x03\x04"):
        return (
            "a zip archive (a PyTorch .pt/.pth checkpoint, a Keras .keras file or an .npz)",
            "export the model to ONNX first, e.g. torch.onnx.export(model, args, 'model.onnx')",
        )
    if head.startswith(b"\x93NUMPY"):
        return ("a NumPy .npy array", "pass it to predict as input data, not as the model")
    if head.startswith(b"\x89HDF"):
        return ("an HDF5 file (a Keras .h5 model?)", "convert it with tf2onnx first")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return (
            "a Python pickle (a joblib/pickle scikit-learn model?)",
            "convert it with skl2onnx first; ModelForge never unpickles files",
        )
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return ("a JSON document", "pass a binary .onnx model")
    if stripped.startswith((b"ir_version", b"graph", b"opset_import", b"producer_name", b"<")):
        return (
            "a text-format protobuf" if not stripped.startswith(b"<") else "a text/XML file",
            "convert text protobuf to binary with onnx.parser or "
            "google.protobuf.text_format + onnx.save_model",
        )
    return None


def _looks_like_tensor(data: bytes) -> bool:
    from google.protobuf.message import DecodeError
    from onnx import TensorProto

    t = TensorProto()
    try:
        t.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return False
    return 0 < t.data_type <= 30 and (bool(t.raw_data) or bool(t.dims) or bool(t.name))


def parse_model_bytes(data: bytes, source: str = "<bytes>") -> ModelProto:
    """Parse bytes as a binary ModelProto; raise InvalidModelError naming what went wrong."""
    from google.protobuf.message import DecodeError
    from onnx import ModelProto

    where = escape(source)
    if not data:
        raise InvalidModelError(
            f"model file '{where}' is empty", hint="re-export the model", code="empty_file"
        )
    found = sniff(data)
    if found is not None:
        raise InvalidModelError(
            f"model file '{where}' is {found[0]}, not an ONNX model", hint=found[1], code="not_onnx"
        )
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        if _looks_like_tensor(data):
            raise InvalidModelError(
                f"model file '{where}' is an ONNX TensorProto (a single tensor), not a model",
                hint="pass the .onnx model; tensors (.pb) are input or output data",
                code="not_onnx",
            ) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "MaxDepth" in reason or "recursion" in reason.lower():
            raise InvalidModelError(
                f"model file '{where}' nests messages (subgraphs of If/Loop/Scan, or attributes) "
                "deeper than the protobuf parser's limit of 100 levels",
                hint="flatten the nested control flow before exporting; a real model does not "
                "nest that deep",
                code="nesting_too_deep",
            ) from None
        raise InvalidModelError(
            f"model file '{where}' is not a valid ONNX protobuf ({escape(reason)}); "
            "it may be truncated or corrupt",
            hint="re-export or re-download the model",
            code="parse_error",
        ) from None
    if not model.HasField("graph"):
        if _looks_like_tensor(data):
            raise InvalidModelError(
                f"model file '{where}' is an ONNX TensorProto (a single tensor), not a model",
                hint="pass the .onnx model; tensors (.pb) are input or output data",
                code="not_onnx",
            )
        raise InvalidModelError(
            f"model file '{where}' parses as protobuf but has no graph",
            hint="this is not an ONNX model, or it is truncated",
            code="no_graph",
        )
    if model.ir_version <= 0:
        raise InvalidModelError(
            f"model file '{where}' has ir_version {model.ir_version}; it must be at least 1",
            hint="re-export the model with a current converter",
            code="bad_ir_version",
        )
    return model


def load_model(path: str | os.PathLike[str]) -> ModelProto:
    """Read and parse an .onnx file safely (regular file, size cap, no external data)."""
    data = read_capped(path)
    return parse_model_bytes(data, os.fspath(path))
