"""Opening a model for prediction: resolve + read (store hashes verified) through
:func:`modelforge.store.open.open_stored`, then a session (upgraded in memory when its
opset is too old for onnxruntime)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnx import ModelProto

    from modelforge.engine.session import Session, SessionConfig
    from modelforge.model.open import OpenedModel
    from modelforge.model.schema import ModelSchema
    from modelforge.store.resolve import ModelLocation


@dataclass
class LoadedModel:
    """A resolved reference and its opened file."""

    location: ModelLocation
    opened: OpenedModel

    @property
    def data(self) -> bytes:
        return self.opened.data

    @property
    def proto(self) -> ModelProto | None:
        return self.opened.proto

    @property
    def schema(self) -> ModelSchema | None:
        return self.opened.schema

    @schema.setter
    def schema(self, value: ModelSchema) -> None:
        self.opened.schema = value

    @property
    def stored_columns(self) -> Any:
        return (self.location.metadata or {}).get("columns")

    def parse(self) -> ModelProto:
        return self.opened.parse()


def load(model: str | os.PathLike[str], *, parse: bool = False) -> LoadedModel:
    """Resolve ``model`` (path or store reference) and read it; parsed by onnx only when
    needed (see :mod:`modelforge.model.open`)."""
    from modelforge.store.open import open_stored

    loc, opened = open_stored(model, parse=parse)
    return LoadedModel(loc, opened)


def schema_from_session(session: Session) -> ModelSchema:
    from modelforge.model.schema import ELEM_TYPES, ModelSchema, TensorSpec

    numpy_of = {name: np_name for name, np_name in ELEM_TYPES.values()}

    def spec(arg: Any) -> TensorSpec:
        t = str(arg.type)
        dtype = numpy_of.get(t[7:-1]) if t.startswith("tensor(") else None
        shape = (
            None
            if arg.shape is None
            else [d if isinstance(d, (int, str)) or d is None else None for d in arg.shape]
        )
        return TensorSpec(name=arg.name, type=t, dtype=dtype, shape=shape)

    inner = session.inner
    return ModelSchema(
        [spec(a) for a in inner.get_inputs()], [spec(a) for a in inner.get_outputs()]
    )


def open_session(
    lm: LoadedModel, cfg: SessionConfig, no_upgrade: bool
) -> tuple[Session, int | None]:
    """A session for ``lm`` (and ``lm.schema`` set); the opset it was upgraded to, if any."""
    from modelforge.engine.session import create_session
    from modelforge.engine.upgrade import create_upgrading
    from modelforge.errors import ModelForgeError

    folder = lm.opened.folder
    if lm.proto is None:
        try:
            session = create_session(lm.data, cfg, external_data_dir=folder)
        except ModelForgeError as exc:
            if exc.code in ("provider_unavailable", "unknown_provider", "invalid_option"):
                raise
            lm.parse()  # a precise error for files that are not ONNX; else upgrade below
        else:
            lm.schema = schema_from_session(session)
            return session, None
    proto = lm.parse()
    return create_upgrading(lm.data, proto, cfg, folder=folder, no_upgrade=no_upgrade)
