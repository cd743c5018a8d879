"""``convert``: change a model's ai.onnx opset with onnx.version_converter, safely.

The whole conversion runs in a guarded child process (parse, external-data check,
conversion, parity). Parity: both models run on the same synthesized inputs — in
onnxruntime where it can run the original, else the original runs in ``onnx.reference`` —
and the converted model is written only when every output agrees within rtol/atol
(otherwise :class:`CheckFailedError`, exit 9, nothing written).

Writing is atomic: the model goes to a temporary file in OUT's folder, then ``os.replace``.
External data: a model whose weights live in external files is loaded only after
:func:`check_external_data` accepted every reference; the converted model then keeps its
weights in ONE external file next to OUT, named ``<OUT file name>.data`` (replaced if it
exists). Nothing is ever written outside OUT's folder.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelforge.errors import (
    CheckFailedError,
    DataError,
    InvalidModelError,
    OutputError,
    RuntimeFailure,
    UsageError,
)
from modelforge.model.opset import default_opset, require_default_opset
from modelforge.text import escape, safe

if TYPE_CHECKING:
    from onnx import ModelProto

    from modelforge.model.open import OpenedModel

__all__ = ["ConvertResult", "convert_model", "convert_opset", "default_opset"]

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5


@dataclass(frozen=True)
class ConvertResult:
    source: str
    output: str
    from_opset: int
    to_opset: int
    compared_with: str  # "onnxruntime" or "onnx.reference"
    parity: list[dict[str, Any]] = field(default_factory=list)
    external_data: str | None = None  # file name of the external data written next to OUT
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "from_opset": self.from_opset,
            "to_opset": self.to_opset,
            "compared_with": self.compared_with,
            "parity": self.parity,
            "external_data": self.external_data,
            "size": self.size,
        }


_NO_ADAPTER = re.compile(r"No Adapter (From|For) Version \$?(\d+) for (\S+)")


def _conversion_error(exc: Exception, source: int, opset: int) -> InvalidModelError:
    """onnx.version_converter fails with a C++ assertion; name the op and the opset it is
    stuck at when it says so, instead of the assertion text."""
    text = " ".join(str(exc).split())
    head = f"onnx.version_converter cannot convert the model from opset {source} to {opset}"
    found = _NO_ADAPTER.search(text)
    if found:
        stuck, op = int(found.group(2)), safe(found.group(3), 80)
        if found.group(1) == "From" and opset < source:
            return InvalidModelError(
                f"{head}: it has no adapter that takes {op} below opset {stuck}",
                hint=f"pass --opset {stuck} or higher, or re-export the model from its "
                f"source framework targeting opset {opset}",
                code="conversion_failed",
            )
        return InvalidModelError(
            f"{head}: it has no adapter for {op} at opset {stuck}",
            hint="try another target opset, or re-export the model from its source framework",
            code="conversion_failed",
        )
    return InvalidModelError(
        f"{head}: {escape(text[:300])}",
        hint="try another target opset, or re-export the model from its source framework",
        code="conversion_failed",
    )


def convert_opset(model: ModelProto, opset: int) -> ModelProto:
    """Convert the ai.onnx opset in memory, keeping metadata, docs and producer."""
    import onnx

    from modelforge.model.checks.context import raised_by_dependency
    from modelforge.model.opset import convert_version

    source = require_default_opset(model)
    try:
        converted = convert_version(model, opset)
    except Exception as exc:  # the converter raises RuntimeError / ConvertError
        if not raised_by_dependency(exc):
            raise
        raise _conversion_error(exc, source, opset) from None
    del converted.metadata_props[:]
    converted.metadata_props.extend(model.metadata_props)
    converted.doc_string = model.doc_string
    converted.producer_name = model.producer_name
    converted.producer_version = model.producer_version
    converted.domain = model.domain
    converted.model_version = model.model_version
    converted.graph.doc_string = model.graph.doc_string
    if not isinstance(converted, onnx.ModelProto):  # pragma: no cover - defensive
        raise TypeError("version_converter returned no ModelProto")
    return converted


def _ort_outputs(
    data: bytes, feeds: dict[str, Any], base: Path | None, which: str = "the original model"
) -> list[Any]:
    from modelforge.engine import isolate
    from modelforge.engine.session import create_session, translate_error

    session = create_session(data, external_data_dir=base)
    try:
        return list(session.inner.run(None, feeds))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/...
        if isolate.is_allocation_failure(exc):
            raise
        raise translate_error(exc, f"running {which} on synthesized inputs") from None


def _convert_child(
    source: str, opset: int, tmp_model: str, data_name: str | None, rtol: float, atol: float,
    trusted: bool, expected_sha256: str | None,
) -> dict[str, Any]:  # fmt: skip
    import onnx

    from modelforge.errors import ModelForgeError
    from modelforge.model.checks.context import raised_by_dependency
    from modelforge.model.checks.parity import compare, reference_unavailable
    from modelforge.model.open import open_model
    from modelforge.model.synth import MAX_SYNTH_BYTES, synthesize_inputs

    opened = open_model(source, trusted=trusted, expected_sha256=expected_sha256, parse=True)
    model = opened.parse()
    files = opened.external
    if files:
        from modelforge.model.external_load import load_checked_external_data

        load_checked_external_data(model, files)
    from_opset = require_default_opset(model)
    if not model.graph.output:
        raise InvalidModelError(
            f"'{escape(Path(source).name)}' declares no outputs, so there is nothing to keep "
            "equal through a conversion",
            hint="re-export the model with its outputs marked as graph outputs "
            "('modelforge validate MODEL' checks this)",
            code="no_outputs",
        )
    converted = convert_opset(model, opset)
    try:
        onnx.checker.check_model(converted)
    except onnx.checker.ValidationError as exc:
        raise InvalidModelError(
            f"the converted model fails onnx.checker: {escape(' '.join(str(exc).split()))[:300]}",
            hint="try another target opset",
            code="conversion_failed",
        ) from None
    try:
        feeds = synthesize_inputs(opened.ensure_schema(), max_bytes=MAX_SYNTH_BYTES)
    except DataError as err:  # its hint ("pass real input data") names nothing convert has
        raise DataError(
            f"cannot check parity, so nothing was converted: {err.message}",
            hint="convert checks the conversion on synthesized inputs; convert with "
            "onnx.version_converter yourself, then check the result with 'modelforge "
            "validate NEW.onnx --inputs IN.npz --expected OUT.npz'",
            code=err.code,
        ) from None
    converted_bytes = converted.SerializeToString()
    try:
        orig_out = _ort_outputs(model.SerializeToString(), feeds, None)
        compared_with = "onnxruntime"
    except ModelForgeError as ort_err:
        from onnx.reference import ReferenceEvaluator

        try:
            orig_out = list(ReferenceEvaluator(model).run(None, feeds))
        except Exception as exc:  # onnx.reference lacks many ops
            if not raised_by_dependency(exc):
                raise
            raise RuntimeFailure(
                "cannot check parity: onnxruntime cannot run the original model "
                f"({ort_err.message}), and {reference_unavailable(exc)}",
                hint="convert with another tool, then check with 'modelforge validate "
                "--inputs/--expected'",
                code="parity_unavailable",
            ) from None
        compared_with = "onnx.reference"
    new_out = _ort_outputs(converted_bytes, feeds, None, "the converted model")
    names = [o.name for o in converted.graph.output]
    parity = [
        compare(n, g, w, rtol, atol) for n, g, w in zip(names, new_out, orig_out, strict=False)
    ]
    bad = [p for p in parity if not p.get("ok")]
    if bad:
        p = bad[0]
        raise CheckFailedError(
            f"converting to opset {opset} changes output '{safe(p['name'], 80)}' "
            f"(max abs error {p.get('max_abs', float('nan')):.3g}, "
            f"max rel error {p.get('max_rel', float('nan')):.3g}; rtol {rtol:g}, atol {atol:g}); "
            "nothing was written",
            hint="try another target opset, or loosen --rtol/--atol if the difference is expected",
            code="parity_mismatch",
            details={"parity": parity},
        )
    if files and data_name:
        onnx.save_model(
            converted, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
            location=data_name, size_threshold=0,
        )  # fmt: skip
    else:
        with open(tmp_model, "wb") as fh:
            fh.write(converted_bytes)
    return {
        "from_opset": from_opset,
        "compared_with": compared_with,
        "parity": parity,
        "external": bool(files),
        "input_files": [os.fspath(f.path) for f in files],
    }


def _check_target_known(opset: int) -> None:
    from onnx import __version__ as onnx_version
    from onnx.defs import onnx_opset_version

    known = onnx_opset_version()
    if opset > known:
        raise UsageError(
            f"--opset {opset} is newer than onnx {onnx_version} knows (ai.onnx opsets 1-{known})",
            hint=f"pass --opset {known} or lower, or upgrade onnx and onnxruntime",
            code="invalid_option",
        )


def _refuse_overwriting_input_data(target: Path, input_files: list[str]) -> None:
    """The converted model's data file is written next to it as ``OUT.data``; when that is
    a data file of the input model itself, replacing it would break the input."""
    if not target.exists():
        return
    resolved = target.resolve()
    if any(Path(f).resolve() == resolved for f in input_files):
        raise UsageError(
            f"the converted model's external data '{escape(target)}' would overwrite the "
            "input model's own external-data file",
            hint="write the converted model to another file name or folder with -o",
            code="output_is_input",
        )


def convert_model(
    model: str | os.PathLike[str] | OpenedModel,
    opset: int,
    output: str | os.PathLike[str],
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    *,
    trusted: bool = False,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
) -> ConvertResult:
    """Convert ``model`` (a path or an OpenedModel) to ``opset`` and write it to ``output``
    if results are unchanged. Store references are resolved by :func:`modelforge.convert_model`.
    """
    from modelforge.engine.isolate import Limits, run_isolated
    from modelforge.model.files import check_output_file, check_regular_file
    from modelforge.model.open import OpenedModel

    if opset < 1:
        raise UsageError("--opset must be a positive integer", code="invalid_option")
    _check_target_known(opset)
    if not (rtol >= 0 and atol >= 0):  # also refuses NaN
        raise UsageError("--rtol and --atol must be >= 0", code="invalid_option")
    expected_sha256 = None
    if isinstance(model, OpenedModel):
        trusted = trusted or model.trusted
        expected_sha256 = model.sha256
        model = model.path
    info = check_regular_file(model)
    out = Path(output).absolute()
    folder = out.parent
    if not folder.is_dir():
        raise OutputError(
            f"output folder '{escape(folder)}' does not exist",
            hint="create it first",
            code="output_folder_missing",
        )
    check_output_file(out)
    if out.exists() and out.resolve() == info.resolved:
        raise UsageError(
            "the output would overwrite the input model",
            hint="write the converted model to a new file with -o",
            code="output_is_input",
        )
    data_name = f"{out.name}.data"
    tmp_dir = tempfile.mkdtemp(prefix=f".{out.name}.", dir=folder)
    tmp_model = os.path.join(tmp_dir, out.name)
    try:
        found = run_isolated(
            _convert_child, os.fspath(info.path), opset, tmp_model, data_name, rtol, atol,
            trusted, expected_sha256, limits=Limits.for_checks(timeout_s, memory_mb),
            what=f"converting '{escape(info.path.name)}' to opset {opset}",
        )  # fmt: skip
        written_data = os.path.join(tmp_dir, data_name)
        external = None
        _refuse_overwriting_input_data(folder / data_name, found.get("input_files", []))
        if found.get("external") and os.path.exists(written_data):
            os.chmod(written_data, os.stat(tmp_model).st_mode & 0o777)  # onnx writes 0600
            os.replace(written_data, folder / data_name)
            external = data_name
        os.replace(tmp_model, out)
    except OSError as exc:
        raise OutputError(
            f"cannot write '{escape(out)}': {exc.strerror or exc}", code="write_failed"
        ) from None
    finally:
        for leftover in (tmp_model, os.path.join(tmp_dir, data_name)):
            if os.path.exists(leftover):
                os.unlink(leftover)
        if os.path.isdir(tmp_dir):
            os.rmdir(tmp_dir)
    return ConvertResult(
        source=os.fspath(info.path),
        output=os.fspath(out),
        from_opset=int(found["from_opset"]),
        to_opset=opset,
        compared_with=str(found["compared_with"]),
        parity=list(found["parity"]),
        external_data=external,
        size=out.stat().st_size,
    )
