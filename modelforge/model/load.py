"""Parsing an ONNX file into a ModelProto, with a useful message when it is something else.

External data is never loaded here: tensors stay as references, checked separately by
:mod:`modelforge.model.external`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelforge.errors import InvalidModelError
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


_TEXT_BYTES = frozenset(b"\t\n\r") | frozenset(range(0x20, 0x7F))


def looks_like_text(data: bytes) -> str | None:
    """ "a CSV/text file" or "a text file" when the first KiBs are plain text (a binary
    ModelProto always holds control bytes: field tags, lengths); else None."""
    head = data[:4096]
    if not head or any(b not in _TEXT_BYTES and b < 0x80 for b in head):
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 4 KiB boundary
            return None
    first = head.split(b"\n", 1)[0]
    return "a CSV/text file" if any(c in first for c in (b",", b"\t", b";")) else "a text file"


# protobuf's parser refuses messages nested deeper than this (ModelProto itself is level 1)
PROTOBUF_DEPTH_LIMIT = 100
_DEPTH_SCAN_MAX_BYTES = 64 * 1024 * 1024


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    while pos < end and shift <= 63:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    return None


def message_depth(data: bytes, descriptor: Any, limit: int = PROTOBUF_DEPTH_LIMIT) -> int | None:
    """How deep message fields nest in serialized ``data`` of message type ``descriptor``,
    walking the wire format iteratively (guided by the descriptor, so only real message
    fields count). Stops as soon as the depth passes ``limit``; None when the bytes are
    not well-formed protobuf (then depth is not the reason a parse failed)."""
    from google.protobuf.descriptor import FieldDescriptor

    message_type = FieldDescriptor.TYPE_MESSAGE
    stack = [(descriptor, 0, len(data), 1)]
    deepest = 1
    while stack:
        desc, pos, end, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        fields = desc.fields_by_number
        while pos < end:
            key = _varint(data, pos, end)
            if key is None:
                return None
            tag, pos = key
            wire = tag & 7
            if wire == 0:
                skipped = _varint(data, pos, end)
                if skipped is None:
                    return None
                pos = skipped[1]
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                length = _varint(data, pos, end)
                if length is None or length[1] + length[0] > end:
                    return None
                size, pos = length
                field = fields.get(tag >> 3)
                if field is not None and field.type == message_type:
                    stack.append((field.message_type, pos, pos + size, depth + 1))
                pos += size
            else:
                return None  # groups are not used by ONNX
        if pos != end:
            return None
    return deepest


def _too_deep(data: bytes, reason: str) -> bool:
    if "MaxDepth" in reason or "recursion" in reason.lower():
        return True  # older protobuf runtimes said so
    if len(data) > _DEPTH_SCAN_MAX_BYTES:
        return False
    from onnx import ModelProto

    depth = message_depth(data, ModelProto.DESCRIPTOR)
    return depth is not None and depth > PROTOBUF_DEPTH_LIMIT


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
    text = looks_like_text(data) if found is None else None
    if text is not None:
        raise InvalidModelError(
            f"model file '{where}' looks like {text}, not an ONNX model",
            hint="pass a binary .onnx file or a store reference where a model is expected "
            "(predict takes the model first: modelforge predict MODEL DATA)",
            code="not_onnx",
        )
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
        if _too_deep(data, reason):
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
