"""Synthesizing model inputs from a schema, for smoke runs, parity checks and benchmarks.

* symbolic dims take their value from ``dims`` (``--dim NAME=VALUE``), else 1; the same
  symbolic name gets the same value in every input; unknown dims become 1; a dim named by
  a sum or product of other dims (``past_sequence_length + 1``) gets its value;
* ``batch`` overrides the first dimension when it is symbolic or unknown;
* floats ~ N(0, 1); integers in [0, 4) (safe as indices, class ids, small counts), below
  the row count of the smallest table an input indexes through Gather (BERT's
  token_type_ids index 2 segment embeddings: values 0 and 1), except
  integer inputs named like a mask (``attention_mask``): all ones, since a row of zeros is
  all padding and transformer exports answer it with NaN; bools random; strings non-empty
  ("a"); inputs (or columns) read by a scikit-learn category op (OneHotEncoder,
  LabelEncoder, CategoryMapper) take categories that op knows.

Inputs that cannot be synthesized (sequences, maps, optional or sparse types, element types
numpy cannot represent) raise :class:`DataError` naming the input.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from modelforge.errors import DataError, ModelForgeError, UsageError
from modelforge.model.schema import ModelSchema, TensorSpec
from modelforge.text import escape, safe

if TYPE_CHECKING:
    import numpy as np

INT_HIGH = 4


def resolve_shape(
    spec: TensorSpec, dims: dict[str, int] | None = None, batch: int | None = None
) -> list[int]:
    """Concrete shape for one input; see the module docstring for the rules."""
    dims = dims or {}
    if spec.shape is None:
        raise DataError(
            f"input '{escape(spec.name)}' has no declared rank, so its shape cannot be guessed",
            hint="pass real input data (predict, or validate --inputs FILE.npz)",
            code="cannot_synthesize",
        )
    shape: list[int] = []
    for i, d in enumerate(spec.shape):
        if i == 0 and batch is not None and not isinstance(d, int):
            shape.append(batch)
        elif isinstance(d, int):
            if d < 0:
                raise DataError(
                    f"input '{escape(spec.name)}' declares a negative dimension {d}",
                    hint="fix the model's input shape",
                    code="cannot_synthesize",
                )
            shape.append(d)
        elif isinstance(d, str):
            shape.append(dim_value(d, dims))
        else:
            shape.append(1)
    return shape


_OPERAND = r"([A-Za-z_][A-Za-z0-9_]*|\d+)"
_EXPRESSION = re.compile(_OPERAND + r"(\s*[-+*]\s*" + _OPERAND + ")+")
_TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[-+*]")


def dim_value(name: str, dims: dict[str, int]) -> int:
    """The size of a symbolic dim: ``--dim`` value, else 1. A dim named by an expression
    over other dims, as Hugging Face exports with a KV cache write
    (``past_sequence_length + 1``, ``past_sequence_length + sequence_length``), gets the
    expression's value, so the inputs agree with each other."""
    if name in dims:
        return int(dims[name])
    if not _EXPRESSION.fullmatch(name.strip()):
        return 1
    terms = _TERM.findall(name)
    values = [t if t in "+-*" else int(t) if t.isdigit() else int(dims.get(t, 1)) for t in terms]
    total, sign, product = 0, 1, values[0]
    for op, value in zip(values[1::2], values[2::2], strict=True):
        if op == "*":
            product = int(product) * int(value)
        else:
            total += sign * int(product)
            sign, product = (1 if op == "+" else -1), value
    total += sign * int(product)
    return max(total, 0)


def synthesize_input(
    spec: TensorSpec,
    rng: np.random.Generator,
    dims: dict[str, int] | None = None,
    batch: int | None = None,
    bound: int | None = None,
) -> np.ndarray:
    import numpy as np

    if not spec.is_tensor:
        raise DataError(
            f"input '{escape(spec.name)}' has type {escape(spec.type)}, which cannot be "
            "synthesized",
            hint="only tensor inputs can be generated; pass real input data instead",
            code="cannot_synthesize",
        )
    if spec.dtype is None:
        raise DataError(
            f"input '{escape(spec.name)}' has element type {escape(spec.type)}, which numpy "
            "cannot represent",
            hint="pass real input data, or convert the model to a supported element type",
            code="cannot_synthesize",
        )
    shape = resolve_shape(spec, dims, batch)
    kind = np.dtype(object if spec.dtype == "str" else spec.dtype).kind
    if spec.dtype == "str":
        return np.full(shape, "a", dtype=object)
    if kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if kind in "iu":
        high = min(INT_HIGH, bound) if bound else INT_HIGH
        values = rng.integers(0, high, size=shape).astype(spec.dtype)
        if "mask" in spec.name.lower():  # attention_mask: 1 = attend (a 0 row is all padding)
            return np.ones(shape, dtype=spec.dtype)  # drawn anyway: other inputs keep theirs
        return values
    if kind == "f":
        return rng.standard_normal(size=shape).astype(spec.dtype)
    if kind == "c":
        real = rng.standard_normal(size=shape)
        return (real + 1j * rng.standard_normal(size=shape)).astype(spec.dtype)
    raise DataError(
        f"input '{escape(spec.name)}' has unsupported dtype {escape(spec.dtype)}",
        hint="pass real input data",
        code="cannot_synthesize",
    )


# validate's smoke run and convert's parity run synthesize at most this much
MAX_SYNTH_BYTES = 1 << 30


def dim_names(schema: ModelSchema) -> set[str]:
    """Every symbolic dimension name the inputs use (the operands of ``a + b`` too)."""
    names: set[str] = set()
    for spec in schema.inputs:
        for d in spec.shape or []:
            if isinstance(d, str):
                names.add(d)
                if _EXPRESSION.fullmatch(d.strip()):
                    names.update(t for t in _TERM.findall(d) if t[0].isalpha() or t[0] == "_")
    return names


def _check_size(schema: ModelSchema, dims: dict[str, int] | None, batch: int | None,
                max_bytes: int) -> None:  # fmt: skip
    import numpy as np

    from modelforge.text import human_bytes

    for spec in schema.inputs:
        if not spec.is_tensor or spec.dtype is None or spec.shape is None:
            continue  # synthesize_input names the problem
        shape = resolve_shape(spec, dims, batch)
        item = 8 if spec.dtype == "str" else max(np.dtype(spec.dtype).itemsize, 8)
        need = int(np.prod(shape, dtype=object)) * item  # floats are drawn as float64
        if need > max_bytes:
            symbolic = any(isinstance(d, str) or d is None for d in spec.shape)
            raise DataError(
                f"synthesizing input '{escape(spec.name)}' {shape} ({spec.dtype}) would take "
                f"{human_bytes(need)}, over the {human_bytes(max_bytes)} limit for synthesized "
                "inputs",
                hint="pass smaller --dim values"
                if symbolic
                else "the model declares this "
                "fixed shape: check it on real inputs (validate --inputs/--expected)",
                code="synthesized_too_large",
            )


def synthesize_inputs(
    schema: ModelSchema,
    dims: dict[str, int] | None = None,
    seed: int = 0,
    batch: int | None = None,
    max_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """One array per model input (overridable initializers keep their stored values).
    ``max_bytes``: refuse (DataError ``synthesized_too_large``) inputs bigger than this."""
    import numpy as np

    for name, value in (dims or {}).items():
        if not isinstance(value, int) or value < 0:
            raise UsageError(
                f"--dim {escape(name)}={escape(value)} must be a non-negative integer",
                code="invalid_option",
            )
    if batch is not None and batch < 1:
        raise UsageError("the batch size must be at least 1", code="invalid_option")
    if max_bytes is not None:
        _check_size(schema, dims, batch, max_bytes)
    rng = np.random.default_rng(seed)
    bounds = schema.index_bounds
    out = {}
    for spec in schema.inputs:
        arr = synthesize_input(spec, rng, dims, batch, bounds.get(spec.name))
        known = schema.categories.get(spec.name)
        out[spec.name] = _with_categories(arr, known, rng) if known else arr
    return out


def _with_categories(
    value: np.ndarray, known: dict[int | None, list[Any]], rng: np.random.Generator
) -> np.ndarray:
    """Fill the input (or the columns a category op reads) with categories it knows."""
    import numpy as np

    out = value.copy()
    for col, cats in known.items():
        if out.dtype == object:
            usable = [str(c) for c in cats]
        elif all(isinstance(c, (int, float)) for c in cats):
            usable = [c for c in cats if np.asarray(c).astype(out.dtype) == c]
        else:
            usable = []
        if not usable:
            continue
        if col is None:
            picks = rng.integers(0, len(usable), size=out.shape)
            out[...] = np.array(usable, dtype=out.dtype)[picks]
        elif out.ndim == 2 and -out.shape[1] <= col < out.shape[1]:
            picks = rng.integers(0, len(usable), size=out.shape[0])
            out[:, col] = np.array(usable, dtype=out.dtype)[picks]
    return out


def parse_dims(items: list[str] | None) -> dict[str, int]:
    """Parse repeated ``--dim NAME=VALUE`` options."""
    out: dict[str, int] = {}
    for item in items or []:
        name, sep, raw = item.partition("=")
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if not sep or not name or value < 0:
            raise UsageError(
                f"--dim '{escape(item)}' is not NAME=VALUE with a non-negative integer VALUE",
                hint="for example --dim batch=8",
                code="invalid_option",
            )
        out[name] = value
    return out


def with_synthesized_sizes(
    err: ModelForgeError, schema: ModelSchema, feeds: dict[str, Any], given: dict[str, int] | None
) -> ModelForgeError:
    """A failed smoke run on a model with symbolic dims: say which sizes were synthesized
    (exporters that trace an example input, like PyTorch's TorchScript exporter, can bake
    its sizes into Reshape constants while still declaring the dims symbolic, so the model
    runs only at those sizes) and how to try others."""
    guessed: dict[str, int] = {}
    for spec in schema.inputs:
        value = feeds.get(spec.name)
        for axis, d in enumerate(spec.shape or []):
            if isinstance(d, str) and d not in (given or {}) and value is not None:
                guessed.setdefault(d, int(value.shape[axis]))
    if not guessed:
        return err
    sizes = ", ".join(f"{safe(k, 40)}={v}" for k, v in list(guessed.items())[:6])
    example = " ".join(f"--dim {safe(k, 40)}=N" for k in list(guessed)[:2])
    err.message = f"{err.message} (symbolic dims synthesized as {sizes})"
    err.hint = (
        f"if the model only runs at particular sizes (e.g. the example input it was traced "
        f"with), retry with {example}; a model that should accept any size needs re-exporting "
        "with those dims left dynamic"
    )
    return err
