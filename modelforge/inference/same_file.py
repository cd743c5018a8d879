"""Refusals before anything is read or written: the output would replace (or grow) an input.

``-o`` naming an input file (also through a link), stdin redirected from the ``-o`` file,
and stdout redirected to an input file (``> d.csv`` has already emptied it).
"""

from __future__ import annotations

import os
from typing import IO, Any

from modelforge.data.formats import STDIO
from modelforge.errors import UsageError
from modelforge.text import safe


def refuse_stdio_on_inputs(
    output: str | None, inputs: Any, stdin: IO[bytes] | None, stdout: IO[bytes] | None
) -> None:
    """stdin redirected from the ``-o`` file (``-o d.csv < d.csv``), or stdout redirected to
    an input file (``> d.csv``: the shell emptied it before predict started)."""
    import stat

    def fd_stat(stream: IO[bytes] | None, fd: int) -> os.stat_result | None:
        try:
            st = os.fstat(stream.fileno() if stream is not None else fd)
        except (OSError, ValueError, AttributeError):
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def same(a: os.stat_result, path: str) -> bool:
        try:
            b = os.stat(path)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    paths = [os.fspath(i) for i in items if isinstance(i, (str, os.PathLike))]
    reads_stdin = inputs is None or not items or STDIO in paths
    if output is not None and reads_stdin:
        st = fd_stat(stdin, 0)
        if st is not None and same(st, output):
            raise UsageError(
                f"output '{safe(output)}' is the file stdin reads from: writing it would "
                "replace the data with the predictions",
                hint="write the predictions to another file with -o",
                code="output_is_input",
            )
    if output is None:
        st = fd_stat(stdout, 1)
        for path in paths:
            if path != STDIO and st is not None and same(st, path):
                why = (
                    "the shell emptied it before predict started"
                    if st.st_size == 0
                    else "the predictions would be appended to the data being read"
                )
                raise UsageError(
                    f"stdout is redirected to the input file '{safe(path)}': {why}",
                    hint="redirect to another file (> predictions.csv) or pass -o FILE"
                    + ("; restore the input from a copy" if st.st_size == 0 else ""),
                    code="output_is_input",
                )


def refuse_output_is_input(output: str | None, inputs: Any) -> None:
    """``-o`` naming one of the input files would replace the data with its predictions."""
    if output is None or not isinstance(inputs, (list, tuple)):
        return
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)) or os.fspath(item) == STDIO:
            continue
        try:
            same = os.path.samefile(item, output)
        except OSError:  # either one missing: the readers or writers say so
            continue
        if same:
            raise UsageError(
                f"output '{safe(output)}' is the input file '{safe(os.fspath(item))}': "
                "writing it would replace the data with the predictions",
                hint="write the predictions to another file with -o",
                code="output_is_input",
            )
