"""Opening untrusted model files safely.

A model path may be a FIFO (reading it blocks forever), a device (``/dev/zero`` never
ends), a directory, or a symlink to any of those. Everything here checks with ``stat``
before opening, opens non-blocking, re-checks the opened descriptor with ``fstat`` (so a
swap between the check and the open is caught), and reads at most a capped number of bytes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from modelforge.errors import InvalidModelError, NotFoundError, OutputError
from modelforge.text import escape, human_bytes

# Protobuf cannot hold more than 2 GiB; bigger models must keep weights as external data.
MAX_MODEL_BYTES = 2 * 1024**3


def check_output_file(out: Path) -> None:
    """An output written by a rename must be a new or regular file: renaming onto a folder
    fails, and onto a device or FIFO replaces it (run as root, ``-o /dev/null`` would turn
    /dev/null into a regular file)."""
    if out.is_dir():
        raise OutputError(
            f"output '{escape(out)}' is a directory",
            hint="pass a file name with -o",
            code="output_is_directory",
        )
    if out.exists() and not out.is_file():
        raise OutputError(
            f"output '{escape(out)}' is not a regular file (a device, FIFO or socket)",
            hint="write to a regular file with -o",
            code="output_not_regular",
        )


@dataclass(frozen=True)
class FileInfo:
    """What we learned about a user-supplied path before reading it."""

    path: Path  # the path as given (absolute)
    resolved: Path  # after following symlinks
    is_symlink: bool
    size: int

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "resolved": str(self.resolved),
            "is_symlink": self.is_symlink,
            "size": self.size,
        }


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_regular_file(path: str | os.PathLike[str], *, what: str = "model file") -> FileInfo:
    """Stat ``path`` (following symlinks) and insist on a regular file; never opens it."""
    p = Path(path).absolute()
    try:
        lst = os.lstat(p)
    except FileNotFoundError:
        raise NotFoundError(
            f"{what} '{escape(p)}' does not exist",
            hint="check the path, or use a store reference such as NAME or NAME:VERSION"
            if what == "model file"
            else "check the path",
            code="file_not_found",
        ) from None
    except OSError as exc:
        raise InvalidModelError(
            f"cannot access {what} '{escape(p)}': {exc.strerror}", code="file_unreadable"
        ) from None
    is_link = stat.S_ISLNK(lst.st_mode)
    try:
        st = os.stat(p)
        resolved = p.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise NotFoundError(
            f"{what} '{escape(p)}' is a dangling symlink",
            hint="point it at an existing .onnx file",
            code="file_not_found",
        ) from None
    except OSError as exc:
        raise InvalidModelError(
            f"cannot access {what} '{escape(p)}': {exc.strerror}", code="file_unreadable"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        via = f" (symlink to '{escape(resolved)}')" if is_link else ""
        raise InvalidModelError(
            f"{what} '{escape(p)}'{via} is {_kind(st.st_mode)}, not a regular file",
            hint=_folder_hint(p, st.st_mode, what),
            code="not_a_regular_file",
        )
    return FileInfo(path=p, resolved=resolved, is_symlink=is_link, size=st.st_size)


def _folder_hint(p: Path, mode: int, what: str) -> str:
    """A folder holding one .onnx file (an exporter's output folder, `model.onnx/` from
    some tools): name the file inside."""
    if what == "model file" and stat.S_ISDIR(mode):
        try:
            inside = sorted(q.name for q in os.scandir(p) if q.name.lower().endswith(".onnx"))
        except OSError:
            inside = []
        if len(inside) == 1:
            return f"the folder holds one model: pass '{escape(p / inside[0])}'"
        if inside:
            shown = ", ".join(inside[:4]) + (", ..." if len(inside) > 4 else "")
            return f"the folder holds {len(inside)} models ({escape(shown)}): pass one"
    return "pass the path of an .onnx file"


def read_capped(
    path: str | os.PathLike[str], *, limit: int = MAX_MODEL_BYTES, what: str = "model file"
) -> bytes:
    """Read a regular file fully, refusing anything that is not one or exceeds ``limit``."""
    info = check_regular_file(path, what=what)
    if info.size > limit:
        raise InvalidModelError(
            f"{what} '{escape(info.path)}' is {human_bytes(info.size)}, over the "
            f"{human_bytes(limit)} limit for a single ONNX protobuf",
            hint="models over 2 GB must keep their weights as external data "
            "(onnx.save_model(..., save_as_external_data=True))",
            code="file_too_large",
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(info.resolved, flags)
    except OSError as exc:
        raise InvalidModelError(
            f"cannot open {what} '{escape(info.path)}': {exc.strerror}", code="file_unreadable"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between stat and open
            raise InvalidModelError(
                f"{what} '{escape(info.path)}' is {_kind(st.st_mode)}, not a regular file",
                code="not_a_regular_file",
            )
        chunks: list[bytes] = []
        remaining = min(st.st_size, limit) + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 16 * 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InvalidModelError(
            f"{what} '{escape(info.path)}' grew past the {human_bytes(limit)} limit while read",
            code="file_too_large",
        )
    return data
