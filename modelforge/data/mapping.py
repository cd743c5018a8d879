"""Which data columns (or arrays) feed which model input, and building the feeds.

Tabular data, in order of precedence, per input:
1. ``--map INPUT=COL[,COL...]`` or ``--columns a,b,c`` (ordered columns for the one input);
2. the column map stored with the model version;
3. a column whose name is the input's name (e.g. one ``[None, 1]`` input per column);
4. the single remaining 2-D input ``[N, F]`` gets all remaining columns in file order when
   exactly F remain (a warning says the mapping is positional).
``--keep`` columns are never fed. Anything unresolved is an error listing the inputs
(name, dtype, shape) and the columns found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelforge.data.batch import Batch, ColumnBatch
from modelforge.data.cast import CastPolicy, cast_column
from modelforge.errors import DataError, UsageError
from modelforge.model.schema import format_shape
from modelforge.text import plural, safe

if TYPE_CHECKING:
    import numpy as np

    from modelforge.model.schema import ModelSchema, TensorSpec


@dataclass(frozen=True)
class InputBinding:
    input: str
    dtype: str
    shape: list[Any] | None
    columns: list[str]
    source: str  # "--map", "--columns", "stored column map", "name", "positional", "array key"
    layout: str  # "matrix": [N, F] from F columns; "column": one column/array as is

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "dtype": self.dtype,
            "shape": self.shape,
            "columns": self.columns,
            "source": self.source,
            "layout": self.layout,
        }


@dataclass(frozen=True)
class Mapping:
    bindings: list[InputBinding]
    keep: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def targets(self) -> dict[str, str]:
        """Column -> dtype it must be parsed as (for readers that coerce while parsing)."""
        out: dict[str, str] = {}
        for b in self.bindings:
            for c in b.columns:
                if out.get(c, b.dtype) != b.dtype:
                    raise DataError(
                        f"column '{safe(c)}' feeds inputs of different dtypes",
                        hint="map each column to inputs of one dtype",
                        code="ambiguous_mapping",
                    )
                out[c] = b.dtype
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [b.to_dict() for b in self.bindings],
            "keep": self.keep,
            "unused_columns": self.unused,
        }


def describe_inputs(inputs: list[TensorSpec]) -> str:
    return "; ".join(f"{safe(s.name)} {s.dtype or s.type} {s.shape_str()}" for s in inputs)


def _cols_list(columns: list[str], limit: int = 30) -> str:
    if not columns:
        return "none"
    shown = ", ".join(safe(c, 60) for c in columns[:limit])
    return shown + (f", … ({len(columns)} in all)" if len(columns) > limit else "")


def _delimiter_hint(columns: list[str]) -> str | None:
    if len(columns) == 1:
        for ch, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
            if ch in columns[0]:
                return f"the file looks {name}-delimited: pass --delimiter {name}"
    return None


def _feature_dim(spec: TensorSpec) -> int | None:
    """F of a [N, F] input (None when symbolic or unknown)."""
    if spec.shape and len(spec.shape) == 2 and isinstance(spec.shape[1], int):
        return spec.shape[1]
    return None


def resolve_tabular(
    schema: ModelSchema,
    columns: list[str],
    *,
    maps: dict[str, list[str]] | None = None,
    columns_opt: list[str] | None = None,
    stored: Any = None,
    keep: list[str] | None = None,
    source: str = "input",
) -> Mapping:
    """Resolve the columns of a table onto the model's inputs (rules in the module doc)."""
    inputs = list(schema.inputs)
    by_name = {s.name: s for s in inputs}
    keep = list(keep or [])
    found = set(columns)
    for c in keep:
        if c not in found:
            raise DataError(
                f"--keep column '{safe(c)}' is not in {safe(source)} "
                f"(found: {_cols_list(columns)})",
                hint="check the column name",
                code="missing_column",
            )
    bound: dict[str, InputBinding] = {}
    warnings: list[str] = []

    def bind(spec: TensorSpec, cols: list[str], how: str) -> None:
        missing = [c for c in cols if c not in found]
        if missing:
            hint = _delimiter_hint(columns) or (
                "rename the columns, or pass --columns/--map to map them explicitly"
                if how == "stored column map"
                else "fix the mapping or rename the column"
            )
            which = (
                f"column '{safe(missing[0])}'"
                if len(missing) == 1
                else f"columns {_cols_list(missing, 8)}"
            )
            raise DataError(
                f"input '{safe(spec.name)}' expects {spec.dtype} {spec.shape_str()}; {which} "
                f"({how}) {'is' if len(missing) == 1 else 'are'} missing from {safe(source)} "
                f"(found: {_cols_list(columns)})",
                hint=hint,
                code="missing_column",
            )
        for c in cols:
            if c in keep:
                raise UsageError(
                    f"column '{safe(c)}' is both fed ({how}) and in --keep", code="invalid_option"
                )
        if not spec.is_tensor or spec.dtype is None:
            raise DataError(
                f"input '{safe(spec.name)}' has type {spec.type}, which cannot be "
                "fed from data columns",
                code="unsupported_input",
            )
        rank = spec.rank
        if len(cols) == 1 and how in ("name", "--map", "stored column map"):
            # one column: a scalar column for [N]/[N, 1], or a list column (JSONL/Parquet)
            layout = "column"
        else:
            layout = "matrix"
            if rank != 2:
                raise DataError(
                    f"input '{safe(spec.name)}' has shape {spec.shape_str()}; {len(cols)} columns "
                    "can only feed a 2-D [N, F] input",
                    hint="use NPY/NPZ input for other ranks",
                    code="shape_mismatch",
                )
            f = _feature_dim(spec)
            if f is not None and f != len(cols):
                raise DataError(
                    f"input '{safe(spec.name)}' expects {spec.dtype} {spec.shape_str()} "
                    f"({f} columns) but {how} gives {len(cols)}: {_cols_list(cols)}",
                    hint="name exactly as many columns as the input's last dimension",
                    code="shape_mismatch",
                )
        bound[spec.name] = InputBinding(spec.name, spec.dtype, spec.shape, list(cols), how, layout)

    # 1. explicit options
    for name, cols in (maps or {}).items():
        if name not in by_name:
            raise UsageError(
                f"--map names input '{safe(name)}', which the model does not have "
                f"(inputs: {describe_inputs(inputs)})",
                hint="use one of the model's input names",
                code="unknown_input",
            )
        bind(by_name[name], cols, "--map")
    if columns_opt:
        free = [s for s in inputs if s.name not in bound]
        if len(free) != 1:
            raise UsageError(
                f"--columns needs exactly one input left to feed; the model has {len(free)} "
                f"(inputs: {describe_inputs(inputs)})",
                hint="use --map INPUT=COL,... for each input",
                code="ambiguous_mapping",
            )
        bind(free[0], columns_opt, "--columns")
    # 2. the column map stored with the model version
    if stored:
        if isinstance(stored, dict):
            for name, cols in stored.items():
                if name in by_name and name not in bound:
                    bind(
                        by_name[name],
                        [cols] if isinstance(cols, str) else list(cols),
                        "stored column map",
                    )
        elif isinstance(stored, list):
            free = [s for s in inputs if s.name not in bound]
            if len(free) == 1:
                bind(free[0], [str(c) for c in stored], "stored column map")
    # 3. by name
    for spec in inputs:
        if spec.name not in bound and spec.name in found and spec.name not in keep:
            bind(spec, [spec.name], "name")
    used = {c for b in bound.values() for c in b.columns}
    remaining = [c for c in columns if c not in used and c not in keep]
    free = [s for s in inputs if s.name not in bound]
    # 4. positional
    if len(free) == 1 and free[0].rank == 2 and remaining:
        f = _feature_dim(free[0])
        if f is None or f == len(remaining):
            bind(free[0], remaining, "positional")
            warnings.append(
                f"input '{safe(free[0].name)}' is fed {plural(len(remaining), 'column')} by "
                "position "
                f"({_cols_list(remaining, 8)}); pass --columns to make the mapping explicit"
            )
            remaining = []
            free = []
    kept_inputs = [s.name for s in free if s.name in found and s.name in keep]
    if kept_inputs:  # the column is there, named like the input, but --keep holds it back
        raise DataError(
            f"column(s) {_cols_list(kept_inputs, 8)} of {safe(source)} would feed the model "
            f"input(s) of the same name, but --keep columns are never fed",
            hint="drop them from --keep (the predictions keep the input order, so join on a "
            "kept id column instead)",
            code="ambiguous_mapping",
        )
    high = [s for s in free if s.rank is not None and s.rank > 2]
    if free and len(high) == len(free):  # an image/sequence model given a table
        spec = high[0]
        raise DataError(
            f"input '{safe(spec.name)}' is {spec.dtype} {spec.shape_str()} ({spec.rank}-D) and "
            f"{safe(source)} has no column named '{safe(spec.name)}': flat columns can only "
            f"feed 1-D and 2-D inputs (found {len(columns)} columns: {_cols_list(columns, 8)})",
            hint=f"pass the data as an NPY or NPZ file with the input's shape, or as a JSON "
            f"Lines/Parquet column '{safe(spec.name)}' of nested lists",
            code="ambiguous_mapping",
        )
    if free:
        hint = _delimiter_hint(columns) or (
            "pass --columns a,b,... (one 2-D input) or --map INPUT=COL,... ; "
            "--explain shows the mapping"
        )
        raise DataError(
            f"cannot map the columns of {safe(source)} onto model input(s) "
            f"{', '.join(safe(s.name) for s in free)}. Model inputs: {describe_inputs(inputs)}. "
            f"Columns found ({len(columns)}): {_cols_list(columns)}",
            hint=hint,
            code="ambiguous_mapping",
        )
    if remaining:
        warnings.append(
            f"columns not fed to the model: {_cols_list(remaining, 8)} (--keep copies columns "
            "to the output)"
        )
    ordered = [bound[s.name] for s in inputs]
    return Mapping(ordered, keep, remaining, warnings)


def resolve_arrays(
    schema: ModelSchema,
    keys: list[str],
    *,
    single: bool,
    maps: dict[str, list[str]] | None = None,
    source: str = "input",
) -> Mapping:
    """NPY (``single``: the one input) and NPZ / --data (keys are input names)."""
    inputs = list(schema.inputs)
    if single:
        if len(inputs) != 1:
            raise DataError(
                f"an NPY file feeds one input but the model has {len(inputs)}: "
                f"{describe_inputs(inputs)}",
                hint="pass an NPZ file with one array per input name",
                code="ambiguous_mapping",
            )
        s = inputs[0]
        return Mapping(
            [InputBinding(s.name, s.dtype or s.type, s.shape, [keys[0]], "npy", "column")]
        )
    rename = {name: cols[0] for name, cols in (maps or {}).items() if cols}
    bindings = []
    missing = []
    for s in inputs:
        key = rename.get(s.name, s.name)
        if key in keys:
            bindings.append(
                InputBinding(s.name, s.dtype or s.type, s.shape, [key], "array key", "column")
            )
        else:
            missing.append(s.name)
    if missing:
        raise DataError(
            f"{safe(source)} has no array for input(s) {', '.join(safe(m) for m in missing)} "
            f"(expected: {describe_inputs(inputs)}; found keys: {_cols_list(keys)})",
            hint="name each array after a model input, or use --map INPUT=KEY",
            code="missing_input",
        )
    used = {b.columns[0] for b in bindings}
    unused = [k for k in keys if k not in used]
    warnings = [f"arrays not used by the model: {_cols_list(unused, 8)}"] if unused else []
    return Mapping(bindings, [], unused, warnings)


def check_shape(
    spec_shape: list[Any] | None, arr: np.ndarray, what: str, *, first: bool = False
) -> None:
    """Fixed dims (other than the batch dim, unless ``first``) must match before
    onnxruntime sees the data."""
    if spec_shape is None:
        return
    if arr.ndim != len(spec_shape):
        raise DataError(
            f"{what} expects rank {len(spec_shape)} {format_shape(spec_shape)} but the data has "
            f"shape {list(arr.shape)}" + (" (a single scalar)" if arr.ndim == 0 else ""),
            hint="reshape the data to the input's shape",
            code="shape_mismatch",
        )
    for i, (want, got) in enumerate(zip(spec_shape, arr.shape, strict=False)):
        if (i > 0 or first) and isinstance(want, int) and want >= 0 and want != got:
            raise DataError(
                f"{what} expects {format_shape(spec_shape)} but the data has shape "
                f"{list(arr.shape)} (dimension {i})",
                hint="reshape the data, or feed other columns",
                code="shape_mismatch",
            )


def assemble(
    mapping: Mapping,
    batch: ColumnBatch,
    *,
    policy: CastPolicy,
    allow_nan: bool,
    whole: bool = False,
) -> Batch:
    """Turn one ColumnBatch into feeds of exactly the model's dtypes and shapes (``whole``:
    the arrays are the whole tensors, so every fixed dimension is checked, none reshaped)."""
    import numpy as np

    feeds: dict[str, np.ndarray] = {}
    for b in mapping.bindings:
        what = f"input '{safe(b.input)}'"
        if b.layout == "matrix" and _from_frame(batch, b):
            # every column already parsed as the input's dtype and seen finite: one C-order
            # copy straight from polars instead of a column-by-column stack
            feed = batch.frame.select(b.columns).to_numpy(order="c")
            check_shape(b.shape, feed, what, first=whole)
            feeds[b.input] = feed
            continue
        arrays = [
            cast_column(
                batch.columns[c],
                b.dtype,
                policy=policy,
                allow_nan=allow_nan,
                where=_where(batch, b, c),
                what=what,
                finite=c in batch.finite,
            )
            for c in b.columns
        ]
        if b.layout == "matrix":
            _check_scalar_cells(b, batch, arrays, what)
            feed = np.stack(arrays, axis=1) if arrays else np.empty((batch.rows, 0))
        else:
            feed = arrays[0]
            last = b.shape[-1] if b.shape else None
            if (
                not whole
                and b.shape is not None
                and len(b.shape) == feed.ndim + 1
                and not (isinstance(last, int) and last != 1)
            ):
                feed = feed.reshape(*feed.shape, 1)
        if (
            b.layout == "column"
            and feed.ndim == 1
            and b.shape is not None
            and len(b.shape) == 2
            and isinstance(b.shape[1], int)
            and b.shape[1] > 1
        ):
            raise DataError(
                f"{what} expects {b.dtype} {format_shape(b.shape)} but column "
                f"'{safe(b.columns[0])}' holds one value per row",
                hint=f"map {b.shape[1]} columns (--map {safe(b.input)}=a,b,... or --columns); "
                f"an NPY/NPZ/JSON array needs the shape [N, {b.shape[1]}]",
                code="shape_mismatch",
            )
        if feed.dtype.kind in "US" and b.dtype == "str":
            feed = feed.astype(object) if feed.dtype.kind == "S" else feed
        check_shape(b.shape, feed, what, first=whole)
        feeds[b.input] = feed if feed.flags.c_contiguous else np.ascontiguousarray(feed)
    return Batch(batch.start, batch.rows, feeds, dict(batch.keep), batch.bytes_read)


def _from_frame(batch: ColumnBatch, b: InputBinding) -> bool:
    if batch.frame is None or not b.columns or len(set(b.columns)) != len(b.columns):
        return False  # polars cannot select one column twice: the column-by-column path can
    return all(c in batch.finite and str(batch.columns[c].dtype) == b.dtype for c in b.columns)


def _check_scalar_cells(
    b: InputBinding, batch: ColumnBatch, arrays: list[np.ndarray], what: str
) -> None:
    """A matrix input takes one value per cell of each column: a column of lists (JSON
    Lines, Parquet) cannot be one of its columns."""
    for column, arr in zip(b.columns, arrays, strict=True):
        if arr.ndim != 1:
            raise DataError(
                f"{what} takes one value per row from column '{safe(column)}', but "
                f"'{safe(batch.source)}' holds lists in it",
                hint="flatten the column into one column per value, or feed it alone "
                "with --map INPUT=COLUMN",
                code="nested_column",
            )


def _where(batch: ColumnBatch, b: InputBinding, column: str):  # type: ignore[no-untyped-def]
    def where(row: int, col: int) -> str:
        if batch.line_of is not None:
            place = f"input '{safe(batch.source)}' line {batch.line_of(row)}"
            if getattr(batch.columns.get(column), "ndim", 1) > 1:  # a JSON Lines list
                return f"{place}, element {col} of list '{safe(column)}'"
            return f"{place}, column '{safe(column)}'"
        place = f"'{safe(batch.source)}' row {batch.file_row + row + 1}"
        if b.layout == "matrix" or b.source in ("name", "--map", "stored column map"):
            return f"{place}, column '{safe(column)}'"
        return f"{place}, element {col} of array '{safe(column)}'"

    return where
