"""The one way to open a model file: read it with the size cap, hash the bytes, and parse
only when needed.

``open_model(path)`` is used by predict, bench, validate, inspect, convert, ``models add``
and ``models import``. It knows nothing about the store: store references are resolved at
the public API and CLI edge (:func:`modelforge.store.open.open_stored`), which passes the
recorded hash as ``expected_sha256`` and ``trusted=True`` for store-owned files.

onnx (~0.1-0.2 s to import) is needed only when the model may reference external data:
such a reference always carries the literal key ``location`` in the file, so a model
without those bytes cannot make onnxruntime open another file, and a session can be
created straight from :attr:`OpenedModel.data`. ``OpenedModel.needs_parse`` says which.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelforge.errors import InvalidModelError, check_type
from modelforge.model.files import read_capped
from modelforge.text import escape

if TYPE_CHECKING:
    from onnx import ModelProto

    from modelforge.model.external import ExternalFile
    from modelforge.model.schema import ModelSchema


@dataclass
class OpenedModel:
    """A model file read once; ``parse()`` gives the ModelProto (external data checked)."""

    path: Path  # the .onnx file (absolute)
    data: bytes  # bytes read with the size cap
    sha256: str  # hex digest of ``data``
    trusted: bool = False  # store-owned: hard-linked external data allowed
    proto: ModelProto | None = None
    schema: ModelSchema | None = None
    external: list[ExternalFile] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        """Where external data may live (the model's own folder)."""
        return self.path.parent

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def may_reference_external_data(self) -> bool:
        """False when the bytes cannot name an external file (no ``location`` key)."""
        return b"location" in self.data

    def parse(self) -> ModelProto:
        """Parse once (escaped, precise errors for non-ONNX files), check every external-data
        reference against the model folder, and extract the schema."""
        if self.proto is None:
            from modelforge.model.external import check_external_data
            from modelforge.model.load import parse_model_bytes
            from modelforge.model.schema import extract_schema

            proto = parse_model_bytes(self.data, os.fspath(self.path))
            self.external = check_external_data(
                proto, self.folder, allow_hardlinks=self.trusted, model_path=self.path
            )
            self.proto = proto
            self.schema = extract_schema(proto)
        return self.proto

    def parse_unchecked(self) -> ModelProto:
        """Parse without checking external data (for reports such as ``inspect`` that show
        an external-data problem instead of failing on it). ``parse()`` still checks."""
        if self.proto is not None:
            return self.proto
        from modelforge.model.load import parse_model_bytes

        return parse_model_bytes(self.data, os.fspath(self.path))

    def ensure_schema(self) -> ModelSchema:
        """The input/output schema, parsing the model if that has not happened yet."""
        if self.schema is None:
            self.parse()
        assert self.schema is not None
        return self.schema


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_model(
    path: str | os.PathLike[str],
    *,
    trusted: bool = False,
    expected_sha256: str | None = None,
    parse: bool = False,
    what: str | None = None,
    auto_parse: bool = True,
) -> OpenedModel:
    """Read ``path`` (a regular file, at most 2 GiB) and hash it.

    ``expected_sha256``: refuse bytes whose digest differs (code ``sha256_mismatch``).
    ``parse``: parse now; otherwise the model is parsed (and its external data checked)
    only when the bytes may name external data, see the module docstring. ``auto_parse=False``
    skips even that: the caller promises to call :meth:`OpenedModel.parse` before handing
    the bytes to onnxruntime (validate does, in its guarded child). ``what`` names the file
    in messages (default "model file").
    """
    label = what or "model file"
    check_type(path, (str, os.PathLike), "path", "the path of an .onnx file")
    p = Path(path).absolute()
    data = read_capped(p, what=label)
    digest = sha256_hex(data)
    if expected_sha256 is not None and digest != expected_sha256:
        raise InvalidModelError(
            f"{label} '{escape(p)}' does not match its recorded sha256 "
            f"(expected {expected_sha256[:12]}…, read {digest[:12]}…); it is corrupt",
            hint="restore the file, or re-add the model",
            code="sha256_mismatch",
            details={"path": str(p), "expected": expected_sha256, "actual": digest},
        )
    opened = OpenedModel(path=p, data=data, sha256=digest, trusted=trusted)
    if parse or (auto_parse and opened.may_reference_external_data):
        opened.parse()
    return opened
