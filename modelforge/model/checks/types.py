"""The types shared by validate and its checks: check names and order, prerequisites,
options and one check's outcome. Imports nothing heavy. :mod:`modelforge.model.validate`
and the modules of :mod:`modelforge.model.checks` import these from here; nothing in
``checks`` imports ``validate`` (the layering test checks that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelforge.errors import UsageError
from modelforge.model.checks.graph import DEFAULT_MAX_DEPTH, DEFAULT_MAX_NODES
from modelforge.text import escape

CHECK_ORDER = (
    "file",
    "parse",
    "external_data",
    "structure",
    "shapes",
    "runtime_compat",
    "session",
    "smoke",
    "parity",
    "examples",
)
PREREQUISITES: dict[str, tuple[str, ...]] = {
    "file": (),
    "parse": ("file",),
    "external_data": ("parse",),
    "structure": ("parse", "external_data"),
    "shapes": ("structure",),
    "runtime_compat": ("parse",),
    "session": ("external_data", "structure", "runtime_compat"),
    "smoke": ("session",),
    "parity": ("session",),
    "examples": ("session",),
}
STATUSES = ("pass", "warn", "fail", "skip")
DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-5
# failure codes that mean a resource limit stopped a check (the CLI exits 8 for them, not 9)
LIMIT_CODES = frozenset({"timeout", "memory_limit", "crashed"})


@dataclass(frozen=True)
class Check:
    """One check's outcome. ``code`` is stable (scripts match on it)."""

    name: str
    status: str  # pass | warn | fail | skip
    code: str
    message: str
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        return cls(
            name=str(data["name"]),
            status=str(data["status"]),
            code=str(data["code"]),
            message=str(data["message"]),
            hint=data.get("hint"),
            details=dict(data.get("details") or {}),
        )


@dataclass(frozen=True)
class ValidateOptions:
    providers: list[str] | None = None
    provider_options: dict[str, str] = field(default_factory=dict)
    require_provider: bool = False
    dims: dict[str, int] = field(default_factory=dict)
    reference: bool = False
    inputs: str | None = None  # .npz of inputs
    expected: str | None = None  # .npz of golden outputs
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    strict: bool = False
    custom_ops: tuple[str, ...] = ()
    timeout_s: float | None = None
    memory_mb: int | None = None
    max_nodes: int = DEFAULT_MAX_NODES
    max_depth: int = DEFAULT_MAX_DEPTH
    stop_after: str | None = None  # the last check to run, e.g. "smoke" for models add
    trusted: bool = False  # store origin: hard-linked external data is allowed
    # golden examples of a store version (store/examples.py record + absolute "path"; set
    # by modelforge.api.validate_model) and their tolerances (None: 1e-5 / 1e-6,
    # checks/examples.py)
    examples: dict[str, Any] | None = None
    examples_rtol: float | None = None
    examples_atol: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "providers": self.providers or ["cpu"],
            "provider_options": self.provider_options,
            "require_provider": self.require_provider,
            "dims": self.dims,
            "reference": self.reference,
            "inputs": self.inputs,
            "expected": self.expected,
            "rtol": self.rtol,
            "atol": self.atol,
            "strict": self.strict,
            "custom_ops": list(self.custom_ops),
            "max_nodes": self.max_nodes,
            "max_depth": self.max_depth,
            "stop_after": self.stop_after,
            "trusted": self.trusted,
        }


def checks_to_run(stop_after: str | None) -> tuple[str, ...]:
    if stop_after is None:
        return CHECK_ORDER
    if stop_after not in CHECK_ORDER:
        raise UsageError(
            f"unknown check '{escape(stop_after)}' for stop_after",
            hint="use one of: " + ", ".join(CHECK_ORDER),
            code="invalid_option",
        )
    return CHECK_ORDER[: CHECK_ORDER.index(stop_after) + 1]
