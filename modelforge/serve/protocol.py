"""Open Inference Protocol constants: datatypes, errors with HTTP status, limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SERVER_NAME = "modelforge"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]

# onnx element type name (as in "tensor(float)") -> OIP datatype
ONNX_TO_OIP: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "bfloat16": "BF16",
}

# OIP datatype -> numpy dtype name (None: no numpy dtype; BYTES handled as object arrays)
OIP_NUMPY: dict[str, str | None] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": None,
    "BF16": None,
}

# element size in bytes for fixed-size datatypes
OIP_SIZE: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
    "BF16": 2,
}

# Triton's extensions outside the OIP that this server does not implement, by the first
# path segment after v2 (and gRPC method): 501 / UNIMPLEMENTED naming the extension, not a
# 404 that reads like a typo in the URL
TRITON_ONLY = {
    "logging": "logging",
    "trace": "trace",
    "systemsharedmemory": "system shared-memory",
    "cudasharedmemory": "CUDA shared-memory",
    "generate": "generate",
    "generate_stream": "generate",
}

BINARY_ONLY = ("FP16", "BF16")  # no JSON spelling: raw bytes only (Triton and KServe agree)


def oip_datatype(onnx_type: str) -> str | None:
    """``tensor(float)`` -> ``FP32``; None for anything that is not a servable tensor."""
    if not (onnx_type.startswith("tensor(") and onnx_type.endswith(")")):
        return None
    return ONNX_TO_OIP.get(onnx_type[7:-1])


def triton_type(datatype: str) -> str:
    """OIP ``FP32`` -> Triton ModelConfig ``TYPE_FP32`` (BYTES is TYPE_STRING there)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


@dataclass
class HttpError(Exception):
    """A request that cannot be served: status + one-line message (``{"error": message}``)."""

    status: int
    message: str
    headers: dict[str, str] | None = None

    def __str__(self) -> str:
        return self.message

    def grpc_code(self) -> str:
        return {
            400: "INVALID_ARGUMENT",
            401: "UNAUTHENTICATED",
            403: "PERMISSION_DENIED",
            404: "NOT_FOUND",
            413: "RESOURCE_EXHAUSTED",
            501: "UNIMPLEMENTED",
            503: "UNAVAILABLE",
        }.get(self.status, "INTERNAL")


def bad_request(message: str) -> HttpError:
    return HttpError(400, message)


def not_found(message: str) -> HttpError:
    return HttpError(404, message)


def unavailable(message: str, retry_after: int = 1) -> HttpError:
    return HttpError(503, message, {"retry-after": str(retry_after)})


def not_implemented(extension: str) -> HttpError:
    return HttpError(
        501,
        f"this server does not implement Triton's {extension} extension (GET v2 lists the "
        f"extensions it has: {', '.join(EXTENSIONS)})",
    )


def too_large(message: str) -> HttpError:
    return HttpError(413, message)


def clip(value: Any, limit: int = 80) -> str:
    """A client-supplied value made safe to echo in a message: printable, bounded."""
    from modelforge.text import escape, truncate

    return truncate(escape(str(value)), limit)
