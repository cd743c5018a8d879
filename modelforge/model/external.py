"""External-data references: find every one, and check it without opening anything.

ONNX tensors may keep their bytes in side files (``data_location = EXTERNAL``) named by a
``location`` key. onnx and onnxruntime have had path-traversal and symlink advisories here
(CVE-2022-25882, CVE-2024-27318), so ModelForge checks every reference itself, using only
``lstat``/``stat``: the location must be relative, free of ``..`` and backslashes, resolve
(through symlinks) inside the model's folder, name a regular file that is not a hard link,
and the offset/length must lie within that file and match the tensor's size.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from modelforge.errors import UnsafeModelError
from modelforge.text import escape

if TYPE_CHECKING:
    from onnx import AttributeProto, FunctionProto, GraphProto, ModelProto, TensorProto

KNOWN_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})
MAX_SUBGRAPH_DEPTH = 256

# bytes per element of fixed-size ONNX element types (TensorProto.DataType values)
_ITEMSIZE = {
    1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
    14: 8, 15: 16, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 23: 1,
}  # fmt: skip
_PACKED_4BIT = {21, 22, 25, 26}  # uint4, int4, float4e2m1 and friends: two per byte


@dataclass(frozen=True)
class ExternalRef:
    """One tensor whose data lives in an external file."""

    tensor: str
    where: str  # e.g. "initializer", "node 'n1' attribute 'value'"
    location: str
    offset: int | None
    length: int | None
    keys: tuple[str, ...]
    data_type: int
    dims: tuple[int, ...]

    def expected_nbytes(self) -> int | None:
        n = 1
        for d in self.dims:
            if d < 0:
                return None
            n *= d
        if self.data_type in _ITEMSIZE:
            return n * _ITEMSIZE[self.data_type]
        if self.data_type in _PACKED_4BIT:
            return (n + 1) // 2
        return None  # strings and unknown types: no fixed size


@dataclass(frozen=True)
class ExternalFile:
    """A checked external-data file: its location as written and where it is on disk."""

    location: str
    path: Path
    size: int
    tensors: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "size": self.size, "tensors": len(self.tensors)}


def _tensor_ref(t: TensorProto, where: str) -> ExternalRef | None:
    from onnx import TensorProto

    if not (t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL):
        return None
    entries: dict[str, str] = {}
    keys: list[str] = []
    for entry in t.external_data:
        keys.append(entry.key)
        entries[entry.key] = entry.value

    def _int(key: str) -> int | None:
        raw = entries.get(key)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise UnsafeModelError(
                f"tensor '{escape(t.name)}' ({where}) has external-data {key} "
                f"'{escape(raw)}' that is not an integer",
                code="external_data_invalid",
            ) from None

    return ExternalRef(
        tensor=t.name,
        where=where,
        location=entries.get("location", ""),
        offset=_int("offset"),
        length=_int("length"),
        keys=tuple(keys),
        data_type=int(t.data_type),
        dims=tuple(int(d) for d in t.dims),
    )


def _attr_tensors(attr: AttributeProto, where: str, depth: int) -> Iterator[tuple[Any, str]]:
    if attr.HasField("t"):
        yield attr.t, where
    for t in attr.tensors:
        yield t, where
    if attr.HasField("sparse_tensor"):
        yield attr.sparse_tensor.values, where
        yield attr.sparse_tensor.indices, where
    for st in attr.sparse_tensors:
        yield st.values, where
        yield st.indices, where
    if attr.HasField("g"):
        yield from _graph_tensors(attr.g, f"{where} subgraph", depth + 1)
    for g in attr.graphs:
        yield from _graph_tensors(g, f"{where} subgraph", depth + 1)


def _node_tensors(nodes: Any, scope: str, depth: int) -> Iterator[tuple[Any, str]]:
    for node in nodes:
        for attr in node.attribute:
            where = f"{scope}node '{escape(node.name or node.op_type)}' attribute '{attr.name}'"
            yield from _attr_tensors(attr, where, depth)


def _graph_tensors(g: GraphProto, scope: str, depth: int) -> Iterator[tuple[Any, str]]:
    if depth > MAX_SUBGRAPH_DEPTH:
        raise UnsafeModelError(
            f"subgraphs are nested more than {MAX_SUBGRAPH_DEPTH} deep",
            hint="such nesting is not produced by any converter; the file is likely hostile",
            code="nesting_too_deep",
        )
    prefix = f"{scope} " if scope else ""
    for t in g.initializer:
        yield t, f"{prefix}initializer".strip()
    for st in g.sparse_initializer:
        yield st.values, f"{prefix}sparse initializer".strip()
        yield st.indices, f"{prefix}sparse initializer".strip()
    yield from _node_tensors(g.node, prefix, depth)


def _function_tensors(fn: FunctionProto) -> Iterator[tuple[Any, str]]:
    yield from _node_tensors(fn.node, f"function '{escape(fn.name)}' ", 0)


def iter_external_refs(model: ModelProto) -> Iterator[ExternalRef]:
    """Every tensor in the model (graph, subgraphs, functions) stored as external data."""
    for t, where in _graph_tensors(model.graph, "", 0):
        ref = _tensor_ref(t, where)
        if ref is not None:
            yield ref
    for fn in model.functions:
        for t, where in _function_tensors(fn):
            ref = _tensor_ref(t, where)
            if ref is not None:
                yield ref


def _refuse(ref: ExternalRef, problem: str, hint: str, code: str = "unsafe_external_data") -> None:
    raise UnsafeModelError(
        f"tensor '{escape(ref.tensor)}' ({ref.where}) external data '{escape(ref.location)}' "
        f"{problem}",
        hint=hint,
        code=code,
    )


def check_location(ref: ExternalRef, base_dir: Path, *, allow_hardlinks: bool = False) -> Path:
    """Check one reference against the model folder; returns the resolved file path.

    Uses only lstat/stat on the path components; the data file is never opened here.
    """
    unknown = sorted(set(ref.keys) - KNOWN_KEYS)
    if unknown:
        _refuse(
            ref,
            f"has unknown key(s) {', '.join(escape(k) for k in unknown[:5])}",
            "allowed keys are location, offset, length, checksum, basepath",
            "external_data_invalid",
        )
    loc = ref.location
    if not loc:
        _refuse(ref, "has no location", "re-export the model", "external_data_invalid")
    if "\x00" in loc or "\\" in loc:
        _refuse(ref, "contains a NUL or backslash", "use a plain relative file name")
    if loc.startswith("/") or (len(loc) > 1 and loc[1] == ":") or loc.startswith("~"):
        _refuse(ref, "is an absolute path", "external data must sit in the model's folder")
    parts = PurePosixPath(loc).parts
    if any(part == ".." for part in parts):
        _refuse(ref, "contains '..'", "external data must sit in the model's folder")
    base = base_dir.resolve()
    candidate = base.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        _refuse(
            ref, "does not exist", "keep the data file next to the .onnx", "external_data_missing"
        )
    except (OSError, RuntimeError) as exc:
        _refuse(ref, f"cannot be resolved ({exc})", "check the file", "external_data_missing")
    if not resolved.is_relative_to(base) or resolved == base:
        _refuse(
            ref,
            "resolves outside the model's folder (through a symlink)",
            "copy the data file into the model's folder instead of linking it",
        )
    st = os.stat(resolved)
    if not stat.S_ISREG(st.st_mode):
        _refuse(ref, "is not a regular file", "point it at a data file", "external_data_invalid")
    if st.st_nlink > 1 and not allow_hardlinks:
        _refuse(
            ref,
            "is a hard link (link count > 1)",
            "hard links can point anywhere; copy the file instead (cp --no-preserve=links)",
        )
    offset = ref.offset or 0
    if offset < 0 or (ref.length is not None and ref.length < 0):
        _refuse(
            ref, "has a negative offset or length", "re-export the model", "external_data_invalid"
        )
    if offset > st.st_size:
        _refuse(
            ref,
            f"offset {offset} is beyond the end of the file ({st.st_size} bytes)",
            "the data file is truncated or belongs to another model",
            "external_data_invalid",
        )
    expected = ref.expected_nbytes()
    length = ref.length if ref.length is not None else st.st_size - offset
    if offset + length > st.st_size:
        _refuse(
            ref,
            f"offset {offset} + length {length} runs past the end of the file ({st.st_size} bytes)",
            "the data file is truncated or belongs to another model",
            "external_data_invalid",
        )
    if expected is not None and length != expected:
        _refuse(
            ref,
            f"holds {length} bytes but the tensor needs {expected}",
            "the data file does not match the model",
            "external_data_invalid",
        )
    return resolved


def check_external_data(
    model: ModelProto,
    base_dir: str | os.PathLike[str],
    *,
    allow_hardlinks: bool = False,
    model_path: str | os.PathLike[str] | None = None,
) -> list[ExternalFile]:
    """Check every external reference; return the distinct files, in first-use order.
    ``model_path``: the model file as given, to explain a missing file when it is a symlink."""
    base = Path(base_dir)
    files: dict[str, tuple[Path, list[str]]] = {}
    for ref in iter_external_refs(model):
        try:
            path = check_location(ref, base, allow_hardlinks=allow_hardlinks)
        except UnsafeModelError as err:
            if err.code == "external_data_missing" and model_path is not None:
                _explain_symlinked_model(err, Path(model_path), ref.location)
            raise
        key = normalized_location(ref.location)
        files.setdefault(key, (path, []))[1].append(ref.tensor)
    return [
        ExternalFile(location=key, path=path, size=path.stat().st_size, tensors=tuple(tensors))
        for key, (path, tensors) in files.items()
    ]


def _explain_symlinked_model(err: UnsafeModelError, model_path: Path, location: str) -> None:
    """External data is looked up next to the path given, as onnxruntime does: a model
    reached through a symlink finds its data only if the data is linked too."""
    if not model_path.is_symlink():
        return
    target = model_path.resolve()
    if (target.parent / location).exists():
        err.hint = (
            f"'{escape(model_path.name)}' is a symlink to '{escape(target)}', and external data "
            "is looked up next to the path given (as onnxruntime does): pass "
            f"'{escape(target)}' instead, or put the data file next to the link"
        )


def normalized_location(location: str) -> str:
    """The relative path a location names inside the model folder (``./a//b`` -> ``a/b``)."""
    return str(PurePosixPath(*[p for p in PurePosixPath(location).parts if p != "."]))


def iter_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every TensorProto of the model (graph, subgraphs, functions), external or not."""
    for t, _where in _graph_tensors(model.graph, "", 0):
        yield t
    for fn in model.functions:
        for t, _where in _function_tensors(fn):
            yield t
