"""The public API edge for model operations: MODEL is a path or a store reference.

``modelforge.validate_model("iris:prod")``, ``modelforge.inspect_model(...)`` and
``modelforge.convert_model(...)`` resolve the reference here, once, with
:func:`modelforge.store.open.open_stored` (store versions are checked against their
recorded sha256), then call the store-agnostic functions of :mod:`modelforge.model`.
The CLI calls these same functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelforge.errors import ArgumentError, check_type

DEFAULT_EXAMPLE_ROWS = 256  # models add --example-rows (store/examples.py holds the maximum)

if TYPE_CHECKING:
    from modelforge.model.convert import ConvertResult
    from modelforge.model.inspect import ModelInspection
    from modelforge.model.open import OpenedModel
    from modelforge.model.validate import ValidateOptions, ValidationReport
    from modelforge.store.add import AddResult
    from modelforge.store.resolve import ModelLocation


def validate_model(
    model: str | os.PathLike[str] | ModelLocation | OpenedModel,
    options: ValidateOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Run validate's checks on a path or store reference (see
    :func:`modelforge.model.validate.validate_model`). The model is read (and a store
    version's hash checked) here; onnx and onnxruntime run only in the guarded child."""
    from modelforge.model.open import OpenedModel
    from modelforge.model.validate import check_options
    from modelforge.model.validate import validate_model as validate_opened
    from modelforge.store.open import open_location
    from modelforge.store.resolve import ModelLocation, resolve_model

    if progress is not None and not callable(progress):
        raise ArgumentError(
            f"progress must be a callable, got {type(progress).__name__}",
            hint="pass progress=lambda message: ... or None",
        )
    if options is not None:
        from modelforge.model.validate import ValidateOptions

        check_type(options, ValidateOptions, "options", "a ValidateOptions (or None)")
    if isinstance(model, OpenedModel):
        return validate_opened(model, options, progress=progress)
    if options is not None:  # bad options are usage errors before the model is read
        check_options(options)
    loc = model if isinstance(model, ModelLocation) else resolve_model(model)
    if loc.origin != "store":
        # a file that is not a regular file, empty or too big is a failed 'file' check
        return validate_opened(loc.path, options, progress=progress, label=loc.display)
    opened = open_location(loc, auto_parse=False)
    return validate_opened(
        opened, _with_examples(options, loc), progress=progress, label=loc.display
    )


def _with_examples(options: ValidateOptions | None, loc: ModelLocation) -> ValidateOptions:
    """A store version's golden examples (``models add --example``) for the examples check."""
    from dataclasses import replace

    from modelforge.model.validate import ValidateOptions, checks_to_run
    from modelforge.store.examples import from_record
    from modelforge.store.layout import Store

    opts = options or ValidateOptions()
    if (
        opts.examples is not None
        or not loc.metadata
        or "examples" not in checks_to_run(opts.stop_after)
    ):
        return opts
    if loc.name is None or loc.version is None:
        return opts
    vdir = Store().version_dir(loc.name, loc.version)
    return replace(opts, examples=from_record(vdir, loc.metadata))


def add_model(
    path: str | os.PathLike[str],
    name: str,
    *,
    example: str | os.PathLike[str] | list[str] | None = None,
    example_rows: int = DEFAULT_EXAMPLE_ROWS,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    **kwargs: Any,
) -> AddResult:
    """Store a model file as a new version (see :func:`modelforge.store.add.add_model`;
    keyword arguments are its options). ``example``: a data file (any format predict
    reads); its first ``example_rows`` rows are mapped as predict maps them, run in a
    guarded child, and stored as golden examples (:mod:`modelforge.inference.examples`)."""
    from modelforge.store.add import add_model as add_stored

    kwargs = _add_kwargs(kwargs)
    check_type(path, (str, os.PathLike), "path", "the path of an .onnx file")
    check_type(example_rows, int, "example_rows", "an int (1..10000)")
    recorder = None
    if example is not None:
        items = example if isinstance(example, (list, tuple)) else [example]
        for item in items:
            check_type(item, (str, os.PathLike), "example", "a data file path (or a list)")
        from modelforge.inference.examples import recorder as make_recorder

        recorder = make_recorder(
            example, rows=example_rows, timeout_s=timeout_s, memory_mb=memory_mb
        )
    return add_stored(
        path, name, timeout_s=timeout_s, memory_mb=memory_mb, examples=recorder, **kwargs
    )


_ADD_OPTIONS: tuple[str, ...] = (
    *("version", "aliases", "description", "labels", "columns", "columns_from"),
    *("force", "store"),
)


def _add_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The store options of ``add_model``; ``aliases="prod"`` is one alias."""
    unknown = [k for k in kwargs if k not in _ADD_OPTIONS]
    if unknown:
        raise ArgumentError(
            f"add_model() got unexpected keyword argument(s): {', '.join(unknown)}",
            hint="the options are: example, example_rows, timeout_s, memory_mb, "
            + ", ".join(_ADD_OPTIONS),
        )
    for key in ("aliases", "columns"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = [kwargs[key]]
    return kwargs


def inspect_model(
    model: str | os.PathLike[str] | ModelLocation | OpenedModel, *, trusted: bool = False
) -> ModelInspection:
    """Summarise a path or store reference (see :func:`modelforge.model.inspect.inspect_model`)."""
    from modelforge.model.inspect import inspect_model as inspect_opened
    from modelforge.model.open import OpenedModel

    if isinstance(model, OpenedModel):
        return inspect_opened(model, trusted=trusted)
    loc, opened = _open(model, auto_parse=False)
    return inspect_opened(opened, trusted=trusted, label=loc.display)


def convert_model(
    model: str | os.PathLike[str] | ModelLocation | OpenedModel,
    opset: int,
    output: str | os.PathLike[str],
    rtol: float | None = None,
    atol: float | None = None,
    *,
    trusted: bool = False,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
) -> ConvertResult:
    """Convert a path or store reference (see :func:`modelforge.model.convert.convert_model`)."""
    from modelforge.model.convert import DEFAULT_ATOL, DEFAULT_RTOL
    from modelforge.model.convert import convert_model as convert_opened
    from modelforge.model.open import OpenedModel

    check_type(opset, int, "opset", "an int, e.g. 17")
    check_type(output, (str, os.PathLike), "output", "the path of the .onnx file to write")
    for arg, value in (("rtol", rtol), ("atol", atol)):
        if value is not None:
            check_type(value, (int, float), arg, "a number >= 0")

    opened = model if isinstance(model, OpenedModel) else _open(model, auto_parse=False)[1]
    return convert_opened(
        opened,
        opset,
        output,
        DEFAULT_RTOL if rtol is None else rtol,
        DEFAULT_ATOL if atol is None else atol,
        trusted=trusted,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
    )


def _open(
    model: str | os.PathLike[str] | ModelLocation, *, auto_parse: bool
) -> tuple[ModelLocation, OpenedModel]:
    from modelforge.store.open import open_stored

    return open_stored(model, auto_parse=auto_parse)
