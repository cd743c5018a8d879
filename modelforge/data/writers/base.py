"""Writers mirror readers: CSV/TSV and JSON Lines stream; Parquet writes row groups as it
goes; NPY/NPZ/JSON are assembled in memory (outputs only) and written at the end.

Files are written atomically: a temp file in the target folder, ``os.replace``d on success
and removed on failure, so a failed run never leaves a partial output (an existing device
or FIFO, e.g. ``-o /dev/null``, is written in place: see :func:`output_target`). Stdout
output is flushed after every batch (``| head`` ends quietly).

Output naming, one rule for every tabular format (CSV, TSV, JSON Lines, Parquet): tensor
``y`` of shape [N] -> column ``y``; [N, K] -> ``y_0 … y_{K-1}`` (so a [N, 1] regressor
output is ``y_0`` everywhere); higher ranks ``y_i_j…`` (row-major); a ZipMap output (list
of dicts) -> one column per key, ``output_probability_<key>``. Array formats keep each
output whole under its name: NPY (one output), NPZ (``y``; ZipMap keys as ``y_keys``;
sequence outputs as ``y_0``, ``y_1``…; maps as ``y_keys``/``y_values``) and JSON (one
object, output name -> nested lists). Outputs that are not one entry per row (scalars,
sequences, a [1] from N rows) can only be written to the array formats.

CSV/TSV text cells starting with ``= + - @`` (or tab/CR) that are not numbers get a
leading ``'`` (formula injection); so do header names (kept columns and output names come
from files).

A kept column (``--keep``) may not share a name with an output column of the chosen
format (:func:`check_clashes`): checked once before anything runs from the declared
shapes, and once on the first batch for names only the data can tell (ZipMap keys).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from modelforge.data.batch import OutputValue
from modelforge.errors import DataError, OutputError
from modelforge.text import safe

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

    from modelforge.model.schema import TensorSpec


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


def column_names(outputs: list[OutputValue], fmt: str) -> list[tuple[str, str]]:
    """(column or array name, output name) for every column ``fmt`` writes for ``outputs``."""
    names: list[tuple[str, str]] = []
    for o in outputs:
        if fmt in ("npy", "npz", "json"):
            names.append((o.name, o.name))
            if o.keys is not None:
                names.append((f"{o.name}_keys", o.name))
        else:
            names.extend((n, o.name) for n, _ in flatten(o))
    return names


def planned_names(spec: TensorSpec, fmt: str) -> list[str] | None:
    """The names ``fmt`` will write for output ``spec`` as far as the model's declared
    shape tells (None: only the data can tell, e.g. ZipMap keys or symbolic dims)."""
    import numpy as np

    name = spec.name
    zipmap = spec.type.startswith("seq(map(")
    if fmt in ("npy", "npz", "json"):
        return [name, f"{name}_keys"] if zipmap else [name]
    if zipmap or not spec.type.startswith("tensor(") or spec.shape is None:
        return None
    if len(spec.shape) <= 1:
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
            fmt = fmt if fmt != "parquet" else "Parquet"
            detail = "" if column == output else f" (from output '{safe(output)}')"
            raise DataError(
                f"kept column '{safe(column)}' has the same name as an output {where} of the "
                f"{fmt.upper() if fmt != 'Parquet' else fmt} output{detail}",
                hint=f"drop '{safe(column)}' from --keep (or rename that column in the input), "
                f"or leave output '{safe(output)}' out with --outputs",
                code="column_clash",
            )


def check_kept_types(keep: dict[str, Any], fmt: str) -> None:
    """A kept column whose type the output format cannot hold (lists, structs or maps in
    CSV/TSV, and in NPZ/JSON unless of a fixed shape; binary in CSV/TSV or JSON Lines):
    refused before any row is written, naming the column (polars would fail, or panic,
    inside the write)."""
    import polars as pl

    for name, values in keep.items():
        if not isinstance(values, pl.Series):
            continue
        dt = values.dtype
        binary = dt == pl.Binary
        nested = dt.is_nested() or dt == pl.Object
        if (
            (fmt in ("csv", "tsv") and (nested or binary))
            or (fmt == "jsonl" and binary)
            or (fmt in ("npz", "npy", "json") and nested and not isinstance(dt, pl.Array))
        ):
            raise OutputError(
                f"kept column '{safe(name)}' holds {safe(str(dt), 60)} values, which "
                f"{fmt.upper()} output cannot hold",
                hint=f"write Parquet (-o out.parquet), or drop '{safe(name)}' from --keep",
                code="column_not_writable",
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
    """A binary destination: stdout, an atomic temp file renamed on commit, or (for an
    existing device or FIFO, see :func:`output_target`) the file itself, written in place."""

    def __init__(
        self, path: str | None, stdout: IO[bytes] | None = None, temp_path: str | None = None
    ) -> None:
        self.path = path
        self.tmp: str | None = None
        if path is None:
            self.fh: IO[bytes] = stdout or _stdout_buffer()
            return
        if Path(path).is_dir():
            raise OutputError(
                f"output '{safe(path)}' is a directory",
                hint="pass a file name with -o",
                code="output_is_directory",
            )
        real, in_place = output_target(path)
        target = Path(real)
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.is_dir():
            raise OutputError(
                f"output folder '{safe(folder)}' does not exist",
                hint="create it first",
                code="output_folder_missing",
            )
        self.target = real
        try:
            if in_place:
                fd = os.open(path, os.O_WRONLY)
            elif temp_path is not None:  # named by a parent process that cleans up after us
                fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                self.tmp = temp_path
            else:
                fd, self.tmp = tempfile.mkstemp(
                    prefix=f".{target.name}.", suffix=".tmp", dir=folder
                )
        except OSError as exc:
            where = path if in_place else folder
            raise OutputError(
                f"cannot write to '{safe(where)}': {safe(exc.strerror)}", code="output_unwritable"
            ) from None
        self.fh = os.fdopen(fd, "wb")

    def commit(self) -> None:
        if self.path is None:
            self.fh.flush()
            return
        self.fh.close()
        if self.tmp is not None:
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.target)
            self.tmp = None

    def abort(self) -> None:
        if self.path is None:  # stdout: not ours to close
            return
        try:
            with contextlib.suppress(OSError):
                self.fh.close()
        finally:
            if self.tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tmp)
                self.tmp = None


def output_target(path: str) -> tuple[str, bool]:
    """The file an output at ``path`` really goes to, and whether it is written in place.

    A rename replaces the directory entry it lands on, so: through a symlink the link's
    target is replaced (the link stays), and an existing device or FIFO (``/dev/null``,
    ``/dev/stdout`` on a pipe, a named pipe) is written into as it is: renaming onto it
    would replace the device node (run as root) or the pipe someone reads."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing (or a dangling link): a new file
        return path, False
    if not stat.S_ISREG(mode):
        return path, True
    return (os.path.realpath(path) if os.path.islink(path) else path), False


def _stdout_buffer() -> IO[bytes]:
    """The process's binary stdout; OutputError when it is closed (``>&-``: Python then
    sets ``sys.stdout`` to None) or its descriptor is gone."""
    buffer: IO[bytes] | None = getattr(sys.stdout, "buffer", None)
    closed = buffer is None or buffer.closed
    if buffer is not None and not closed:
        try:
            os.fstat(buffer.fileno())
        except ValueError:  # in-memory streams (tests, embedding; io.UnsupportedOperation)
            pass
        except OSError:
            closed = True  # the descriptor was closed after Python started
    if buffer is None or closed:
        raise OutputError(
            "cannot write the output to stdout: stdout is closed",
            hint="pass -o FILE to write the predictions to a file, or leave stdout open",
            code="stdout_closed",
        )
    return buffer


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
    """Base writer: ``write`` takes one batch of per-row outputs, ``write_whole`` the
    outputs of a run on whole tensors; subclasses implement ``_write`` (and ``_whole``,
    ``_finish``). ``--keep`` clashes are checked on the first batch only, and not at all
    when the plan could name every output column beforehand (``names_checked``)."""

    whole_ok = False  # can hold outputs that are not one entry per row
    fmt = "csv"

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.rows = 0
        self.names_checked = False  # set when the plan already checked every output name
        self._types_checked = False

    def write(self, keep: dict[str, Any], outputs: list[OutputValue], rows: int) -> None:
        for o in outputs:
            if not o.per_row(rows):
                raise OutputError(
                    f"output '{safe(o.name)}' is {o.shape_text()}, not one entry per input row "
                    f"({rows} rows)",
                    hint="pass --whole to run the model once on all the data, or select "
                    "per-row outputs with --outputs",
                    code="output_not_per_row",
                )
        if not self.names_checked:
            check_clashes(keep, column_names(outputs, self.fmt), self.fmt)
            self.names_checked = True
        if not self._types_checked:
            check_kept_types(keep, self.fmt)
            self._types_checked = True
        try:
            self._write(keep, outputs)
        except OSError as exc:
            raise _output_error(exc, self.sink.path) from None
        self.rows += rows

    def write_whole(
        self, outputs: list[OutputValue], rows: int, keep: dict[str, Any] | None = None
    ) -> None:
        """Outputs of one run on whole tensors (``rows``: the inputs' leading dimension).
        Outputs with one entry per input row are written like a batch (kept columns too);
        others only by array formats, as they are."""
        keep = keep or {}
        bad = next((o for o in outputs if not o.per_row(rows)), None)
        if bad is None:
            self.write(keep, outputs, rows)
            return
        if not self.whole_ok:
            raise OutputError(
                f"output '{safe(bad.name)}' is {bad.shape_text()}, not one entry per input row, "
                f"so a {self.fmt.upper()} file cannot hold it",
                hint="write an NPZ (or NPY/JSON) output, e.g. -o out.npz, or leave the "
                "output out with --outputs",
                code="output_not_per_row",
            )
        if keep:
            raise OutputError(
                f"output '{safe(bad.name)}' is {bad.shape_text()}, not one entry per input row, "
                "so the --keep columns cannot be written next to it",
                hint="drop --keep, or leave the output out with --outputs",
                code="output_not_per_row",
            )
        try:
            self._whole(outputs)
        except OSError as exc:
            raise _output_error(exc, self.sink.path) from None

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

    def _whole(self, outputs: list[OutputValue]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass


def temp_name(path: str) -> str:
    """A fresh temp-file name next to ``path`` (for a parent that must clean up)."""
    import secrets

    target = Path(output_target(path)[0])
    return str(target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp")
