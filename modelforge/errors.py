"""The one error hierarchy of ModelForge, and the one table of exit codes.

Every user-facing failure is a :class:`ModelForgeError` with a stable string ``code``
(used in the JSON envelope and by scripts), a one-line ``message`` (the problem) and an
optional ``hint`` (the fix). The class decides the process exit code; the CLI maps errors
to exit codes here and nowhere else.

Anything that is not a ModelForgeError is a bug: the CLI reports it as InternalError (exit
1) and shows its traceback with ``--debug``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Documented process exit codes (README "Exit codes")."""

    OK = 0
    INTERNAL = 1  # a bug in ModelForge: traceback shown
    USAGE = 2  # bad arguments, invalid names or references (Typer keeps 2 as well)
    NOT_FOUND = 3  # a model, version, alias or file that does not exist
    INVALID_MODEL = 4  # the model file is unreadable, malformed or unsafe
    DATA = 5  # input data cannot be read or mapped onto the model's inputs
    STORE = 6  # the store is corrupt, locked or in conflict
    RUNTIME = 7  # onnxruntime failed: provider unavailable, session or run failed
    LIMIT = 8  # a resource limit was hit: timeout, memory cap, crash in a child process
    CHECK_FAILED = 9  # a check ran and reported failures (validate, verify, parity)
    OUTPUT = 10  # the output cannot be written
    INTERRUPTED = 130  # Ctrl-C


class ModelForgeError(Exception):
    """Base class of every error ModelForge reports to users."""

    exit_code: ExitCode = ExitCode.USAGE
    default_code = "error"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code or self.default_code
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "exit_code": int(self.exit_code),
        }
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} Hint: {self.hint}"


class UsageError(ModelForgeError):
    """Bad arguments: invalid names, references, options or option values."""

    exit_code = ExitCode.USAGE
    default_code = "invalid_argument"


class InvalidNameError(UsageError):
    default_code = "invalid_name"


class ArgumentError(UsageError, TypeError):
    """A library argument of the wrong type or an unknown keyword (also a ``TypeError``, as
    Python reports those, so ``except TypeError`` keeps working)."""

    default_code = "invalid_argument"


def check_type(value: Any, types: type | tuple[type, ...], arg: str, expected: str) -> None:
    """Raise :class:`ArgumentError` naming ``arg`` unless ``value`` is one of ``types``
    (``bool`` never passes for ``int``)."""
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in _tuple(types)):
        return
    raise ArgumentError(
        f"{arg} must be {expected}, got {type(value).__name__}",
        hint=f"pass {arg} as {expected}",
    )


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


_SIMPLE: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,),
                                        "bool": (bool,)}  # fmt: skip


def check_field_types(options: Any) -> None:
    """For an options dataclass: every field annotated with plain ``int``/``float``/``str``/
    ``bool`` (``| None``) holds that type (``ServeOptions(port="80")`` is an ArgumentError
    naming the field, not a TypeError from a later comparison). Other fields are left to
    the options' own checks."""
    import dataclasses

    for f in dataclasses.fields(options):
        kinds = [k.strip() for k in str(f.type).split("|")]
        if not all(k in _SIMPLE or k == "None" for k in kinds):
            continue
        value = getattr(options, f.name)
        if value is None and "None" in kinds:
            continue
        types = tuple(t for k in kinds if k != "None" for t in _SIMPLE[k])
        check_type(value, types, f.name, " or ".join(kinds))


class NotFoundError(ModelForgeError):
    exit_code = ExitCode.NOT_FOUND
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"


class InvalidModelError(ModelForgeError):
    """The model file cannot be used: not a regular file, not ONNX, unsafe, invalid."""

    exit_code = ExitCode.INVALID_MODEL
    default_code = "invalid_model"


class UnsafeModelError(InvalidModelError):
    default_code = "unsafe_model"


class DataError(ModelForgeError):
    """Input data cannot be read, parsed or mapped onto the model's inputs."""

    exit_code = ExitCode.DATA
    default_code = "invalid_data"


class StoreError(ModelForgeError):
    exit_code = ExitCode.STORE
    default_code = "store_error"


class StoreCorruptError(StoreError):
    default_code = "store_corrupt"


class RuntimeFailure(ModelForgeError):
    """onnxruntime refused or failed: provider unavailable, session creation, run."""

    exit_code = ExitCode.RUNTIME
    default_code = "runtime_error"


class ProviderUnavailableError(RuntimeFailure):
    default_code = "provider_unavailable"


class ResourceLimitError(ModelForgeError):
    """A guarded child process timed out, ran out of memory or crashed."""

    exit_code = ExitCode.LIMIT
    default_code = "resource_limit"


class CheckFailedError(ModelForgeError):
    """A check ran to completion and found problems (validate, verify, parity)."""

    exit_code = ExitCode.CHECK_FAILED
    default_code = "check_failed"


class OutputError(ModelForgeError):
    exit_code = ExitCode.OUTPUT
    default_code = "output_error"


def rebuild_error(info: dict[str, Any]) -> ModelForgeError:
    """Rebuild an error a child process sent as JSON (``{"class", "code", "message", ...}``).

    Only ModelForgeError subclasses defined in this module can be named: a hostile child
    cannot make the parent instantiate anything else.
    """
    cls = globals().get(str(info.get("class", "")))
    if not (isinstance(cls, type) and issubclass(cls, ModelForgeError)):
        cls = ModelForgeError
    hint = info.get("hint")
    details = info.get("details")
    return cls(
        str(info.get("message", "")),
        hint=hint if isinstance(hint, str) else None,
        code=str(info.get("code") or cls.default_code),
        details=details if isinstance(details, dict) else None,
    )


class InternalError(ModelForgeError):
    """A bug in ModelForge itself (not the user's model, data or arguments): exit 1.

    ``traceback`` holds the text of the original traceback when it happened in a child
    process; the CLI shows it (or the live traceback) only with ``--debug``."""

    exit_code = ExitCode.INTERNAL
    default_code = "internal_error"
    traceback: str = ""


class Interrupted(ModelForgeError):
    """Ctrl-C: exit 130; in JSON mode the envelope says ``interrupted``."""

    exit_code = ExitCode.INTERRUPTED
    default_code = "interrupted"


class ChildStartError(ModelForgeError):
    """The guarded child process could not be started (fork failed, the interpreter could
    not import ModelForge, the work could not be sent to it): a problem of the
    environment or the caller, never a verdict on the model file."""

    exit_code = ExitCode.LIMIT
    default_code = "child_start_failed"


EXIT_CODE_TABLE: list[tuple[int, str]] = [
    (ExitCode.OK, "success"),
    (ExitCode.INTERNAL, "internal error (a bug; --debug shows the traceback)"),
    (ExitCode.USAGE, "usage error: bad option, invalid name or reference"),
    (ExitCode.NOT_FOUND, "model, version, alias or file not found"),
    (ExitCode.INVALID_MODEL, "model file unreadable, malformed, unsafe or invalid"),
    (ExitCode.DATA, "input data cannot be read or mapped onto the model"),
    (ExitCode.STORE, "store corrupt, locked or in conflict"),
    (ExitCode.RUNTIME, "onnxruntime failed (provider, session or run)"),
    (ExitCode.LIMIT, "resource limit hit: timeout, memory cap or crash in a child process"),
    (ExitCode.CHECK_FAILED, "a check ran and failed (validate, verify, parity)"),
    (ExitCode.OUTPUT, "output cannot be written"),
    (ExitCode.INTERRUPTED, "interrupted (Ctrl-C)"),
]
