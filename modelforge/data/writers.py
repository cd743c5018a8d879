"""Writers mirror readers: CSV/TSV and JSON Lines stream; Parquet writes row groups as it
goes; NPY/NPZ are assembled in memory (outputs only) and written at the end.

Files are written atomically: a temp file in the target folder, ``os.replace``d on success
and removed on failure, so a failed run never leaves a partial output. Stdout output is
flushed after every batch (``| head`` ends quietly).

Output naming (tabular formats): tensor ``y`` of shape [N] -> column ``y``; [N, K] ->
``y_0 … y_{K-1}``; higher ranks ``y_i_j…`` (row-major); a ZipMap output (list of dicts)
-> one column per key, ``output_probability_<key>``. CSV/TSV text cells starting with
``= + - @`` (or tab/CR) that are not numbers get a leading ``'`` (formula injection); so
do header names (kept columns and output names come from files).

A kept column (``--keep``) may not share a name with an output column of the chosen
format (:func:`check_clashes`): the run stops before writing anything.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from modelforge.errors import DataError, OutputError
from modelforge.text import safe

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np
    import polars as pl

    from modelforge.model.schema import TensorSpec


@dataclass
class OutputValue:
    """One model output for one batch: an array, plus the keys of a ZipMap output."""

    name: str
    array: np.ndarray
    keys: list[Any] | None = None


def flatten(out: OutputValue) -> list[tuple[str, np.ndarray]]:
    """Per-row columns of one output, named as in the module doc."""
    import numpy as np

    arr = out.array
    if out.keys is not None:
        return [(f"{out.name}_{k}", arr[:, j]) for j, k in enumerate(out.keys)]
    if arr.ndim == 1:
        return [(out.name, arr)]
    flat = arr.reshape(arr.shape[0], -1)
    names = ["_".join(str(i) for i in idx) for idx in np.ndindex(*arr.shape[1:])]
    return [(f"{out.name}_{n}", flat[:, j]) for j, n in enumerate(names)]


def _nested(fmt: str, out: OutputValue) -> bool:
    """Parquet keeps a tensor of rank >= 2 as one nested column named like the output."""
    return fmt == "parquet" and out.keys is None and out.array.ndim > 1


def column_names(outputs: list[OutputValue], fmt: str) -> list[tuple[str, str]]:
    """(column or array name, output name) for every column ``fmt`` writes for ``outputs``."""
    names: list[tuple[str, str]] = []
    for o in outputs:
        if fmt in ("npy", "npz"):
            names.append((o.name, o.name))
            if o.keys is not None:
                names.append((f"{o.name}_keys", o.name))
        elif _nested(fmt, o):
            names.append((o.name, o.name))
        else:
            names.extend((n, o.name) for n, _ in flatten(o))
    return names


def planned_names(spec: TensorSpec, fmt: str) -> list[str] | None:
    """The names ``fmt`` will write for output ``spec`` as far as the model's declared
    shape tells (None: only the data can tell, e.g. ZipMap keys or symbolic dims)."""
    import numpy as np

    name = spec.name
    zipmap = spec.type.startswith("seq(map(")
    if fmt in ("npy", "npz"):
        return [name, f"{name}_keys"] if zipmap else [name]
    if zipmap or not spec.type.startswith("tensor(") or spec.shape is None:
        return None
    if len(spec.shape) <= 1 or fmt == "parquet":
        return [name]
    dims = [d for d in spec.shape[1:] if isinstance(d, int) and d >= 0]
    if len(dims) != len(spec.shape) - 1 or int(np.prod(dims)) > 1_000_000:
        return None
    return [f"{name}_" + "_".join(map(str, idx)) for idx in np.ndindex(*dims)]


def check_clashes(keep: Iterable[str], names: Iterable[tuple[str, str]], fmt: str) -> None:
    """A kept column named like an output column would be overwritten or merged: refuse."""
    kept = set(keep)
    for column, output in names:
        if column in kept:
            where = "column" if fmt in ("csv", "tsv", "jsonl", "parquet") else "array"
            detail = "" if column == output else f" (from output '{safe(output)}')"
            raise DataError(
                f"kept column '{safe(column)}' has the same name as an output {where} of the "
                f"{fmt.upper()} output{detail}",
                hint=f"drop '{safe(column)}' from --keep (or rename that column in the input), "
                f"or leave output '{safe(output)}' out with --outputs",
                code="column_clash",
            )


def neutralise_text(value: str) -> str:
    """A text cell or header that a spreadsheet would run as a formula gets a leading '."""
    if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(value.strip())
        except ValueError:
            return "'" + value
    return value


def _text(arr: np.ndarray) -> np.ndarray:
    """String outputs come from onnxruntime as object arrays: store them as unicode."""
    return arr.astype(str) if arr.dtype.kind in "OS" else arr


class _Sink:
    """A binary destination: stdout, or an atomic temp file renamed on commit."""

    def __init__(
        self, path: str | None, stdout: IO[bytes] | None = None, temp_path: str | None = None
    ) -> None:
        self.path = path
        self.tmp: str | None = None
        if path is None:
            self.fh: IO[bytes] = stdout or sys.stdout.buffer
            return
        target = Path(path)
        if target.is_dir():
            raise OutputError(
                f"output '{safe(path)}' is a directory",
                hint="pass a file name with -o",
                code="output_is_directory",
            )
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.is_dir():
            raise OutputError(
                f"output folder '{safe(folder)}' does not exist",
                hint="create it first",
                code="output_folder_missing",
            )
        try:
            if temp_path is not None:  # named by a parent process that cleans up after us
                fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                self.tmp = temp_path
            else:
                fd, self.tmp = tempfile.mkstemp(
                    prefix=f".{target.name}.", suffix=".tmp", dir=folder
                )
        except OSError as exc:
            raise OutputError(
                f"cannot write to '{safe(folder)}': {safe(exc.strerror)}", code="output_unwritable"
            ) from None
        self.fh = os.fdopen(fd, "wb")

    def commit(self) -> None:
        if self.tmp is None or self.path is None:
            self.fh.flush()
            return
        self.fh.close()
        os.chmod(self.tmp, 0o666 & ~_umask())
        os.replace(self.tmp, self.path)
        self.tmp = None

    def abort(self) -> None:
        if self.tmp is not None:
            try:
                self.fh.close()
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tmp)
                self.tmp = None


def _output_error(exc: OSError, path: str | None) -> Exception:
    """Broken pipes end quietly (the CLI catches BrokenPipeError); the rest is OutputError.

    polars reports a closed stdout as a plain OSError "Broken pipe (os error 32)"."""
    import errno

    text = str(exc)
    if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE or "os error 32" in text:
        return BrokenPipeError(errno.EPIPE, "Broken pipe")
    where = "stdout" if path is None else f"'{safe(path)}'"
    return OutputError(
        f"cannot write the output to {where}: {safe(text, 200)}",
        hint="check free disk space and permissions",
        code="write_failed",
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Writer:
    """Base writer: subclasses implement ``_write`` and optionally ``_finish``."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.rows = 0

    def write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        n = outputs[0].array.shape[0] if outputs else 0
        for o in outputs:
            if o.array.ndim == 0 or o.array.shape[0] != n:
                raise OutputError(
                    f"output '{safe(o.name)}' has shape {list(o.array.shape)}, not one entry "
                    "per input row",
                    hint="select per-row outputs with --outputs",
                    code="output_not_per_row",
                )
        try:
            self._write(keep, outputs)
        except OSError as exc:
            raise _output_error(exc, self.sink.path) from None
        self.rows += n

    def close(self) -> None:
        try:
            self._finish()
            self.sink.commit()
        except OSError as exc:
            self.sink.abort()
            raise _output_error(exc, self.sink.path) from None
        except BaseException:
            self.sink.abort()
            raise

    def abort(self) -> None:
        self.sink.abort()

    def _write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass


def _frame(
    keep: dict[str, Any], outputs: list[OutputValue], *, neutralise: bool, fmt: str = "csv"
) -> pl.DataFrame:
    import polars as pl

    check_clashes(keep, column_names(outputs, fmt), fmt)
    series: list[pl.Series] = []
    for name, values in keep.items():
        s = values.alias(name) if isinstance(values, pl.Series) else pl.Series(name, values)
        series.append(s)
    for o in outputs:
        for name, col in flatten(o):
            series.append(pl.Series(name, _text(col) if col.dtype.kind in "OSU" else col))
    df = pl.DataFrame(series)
    if neutralise:
        renamed = {c: neutralise_text(c) for c in df.columns}
        if any(k != v for k, v in renamed.items()):
            if len(set(renamed.values())) < len(renamed):
                bad = next(k for k, v in renamed.items() if k != v and v in renamed)
                raise DataError(
                    f"column '{safe(bad)}' would be written as '{safe(renamed[bad])}' (a "
                    "leading ' stops spreadsheets running it), which another column is named",
                    hint="rename one of the two columns in the input",
                    code="column_clash",
                )
            df = df.rename(renamed)
        text_cols = [c for c, t in df.schema.items() if t == pl.String]
        if text_cols:
            df = df.with_columns(
                pl.when(
                    pl.col(c).str.contains(r"^[=+\-@\t\r]")
                    & pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).is_null()
                )
                .then(pl.lit("'") + pl.col(c))
                .otherwise(pl.col(c))
                .alias(c)
                for c in text_cols
            )
    return df


class CsvWriter(Writer):
    def __init__(self, sink: _Sink, separator: str = ",") -> None:
        super().__init__(sink)
        self.separator = separator
        self.header = True

    def _write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        df = _frame(keep, outputs, neutralise=True, fmt="tsv" if self.separator == "\t" else "csv")
        df.write_csv(self.sink.fh, separator=self.separator, include_header=self.header)
        self.header = False
        self.sink.fh.flush()


class JsonlWriter(Writer):
    def _write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        _frame(keep, outputs, neutralise=False, fmt="jsonl").write_ndjson(self.sink.fh)
        self.sink.fh.flush()


class ParquetWriter(Writer):
    """Row groups as batches arrive; tensors keep their shape as fixed-size lists."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__(sink)
        self._writer: Any = None

    def _write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        import polars as pl
        import pyarrow as pa
        import pyarrow.parquet as pq

        check_clashes(keep, column_names(outputs, "parquet"), "parquet")
        cols: dict[str, Any] = {}
        for name, values in keep.items():
            cols[name] = values.to_arrow() if isinstance(values, pl.Series) else pa.array(values)
        for o in outputs:
            if not _nested("parquet", o):
                for name, col in flatten(o):
                    cols[name] = pa.array(_text(col))
            else:
                arr = _text(o.array)
                nested: Any = pa.array(arr.reshape(-1))
                for dim in reversed(arr.shape[1:]):
                    nested = pa.FixedSizeListArray.from_arrays(nested, dim)
                cols[o.name] = nested
        table = pa.table(cols)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.sink.fh, table.schema)
        self._writer.write_table(table)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the output is being discarded anyway
                self._writer.close()
            self._writer = None
        super().abort()


class ArrayWriter(Writer):
    """NPY (one output) and NPZ (every output, ZipMap keys, kept columns)."""

    def __init__(self, sink: _Sink, fmt: str) -> None:
        super().__init__(sink)
        self.fmt = fmt
        self.parts: dict[str, list[np.ndarray]] = {}
        self.keys: dict[str, list[Any]] = {}

    def _write(self, keep: dict[str, Any], outputs: list[OutputValue]) -> None:
        import numpy as np

        if self.fmt == "npy" and (len(outputs) != 1 or keep):
            raise OutputError(
                f"NPY output holds one array but this run has {len(outputs)} outputs "
                f"({', '.join(safe(o.name) for o in outputs)})"
                + (" and --keep columns" if keep else ""),
                hint="select one with --outputs, or write .npz",
                code="npy_one_output",
            )
        check_clashes(keep, column_names(outputs, self.fmt), self.fmt)
        for name, values in keep.items():
            arr = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
            self.parts.setdefault(name, []).append(_text(arr))
        for o in outputs:
            self.parts.setdefault(o.name, []).append(_text(o.array))
            if o.keys is not None:
                self.keys[o.name] = o.keys

    def _finish(self) -> None:
        import numpy as np

        arrays = {k: np.concatenate(v) for k, v in self.parts.items()}
        if self.fmt == "npy":
            np.save(self.sink.fh, next(iter(arrays.values())), allow_pickle=False)
            return
        for name, keys in self.keys.items():
            arrays[f"{name}_keys"] = np.asarray(keys)
        np.savez(self.sink.fh, allow_pickle=False, **arrays)  # type: ignore[arg-type]


def temp_name(path: str) -> str:
    """A fresh temp-file name next to ``path`` (for a parent that must clean up)."""
    import secrets

    target = Path(path)
    return str(target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp")


def open_writer(
    path: str | None,
    fmt: str,
    *,
    stdout: IO[bytes] | None = None,
    temp_path: str | None = None,
) -> Writer:
    sink = _Sink(path, stdout, temp_path)
    if fmt in ("csv", "tsv"):
        return CsvWriter(sink, "\t" if fmt == "tsv" else ",")
    if fmt == "jsonl":
        return JsonlWriter(sink)
    if fmt == "parquet":
        return ParquetWriter(sink)
    return ArrayWriter(sink, fmt)
