"""What a model must pass to enter the store: validate's checks 1-8 (file to smoke run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelforge.errors import InvalidModelError, ResourceLimitError
from modelforge.model.checks.types import LIMIT_CODES


@dataclass
class AdmissionReport:
    ok: bool
    data: dict[str, Any]  # the validation report, stored in meta.json
    failures: list[str]

    def first_failure_code(self) -> str | None:
        for check in self.data.get("checks", []):
            if check.get("status") == "fail":
                return str(check.get("code"))
        return None

    def reasons(self) -> str:
        return "; ".join(self.failures) if self.failures else "no reason recorded"

    def refuse_unless_ok(self, what: str, *, force: bool) -> None:
        """Raise the error that keeps a failing model out of the store (unless ``force``).

        A resource limit (timeout, memory cap, crash) is exit 8: the model could not be
        checked at all. Any other failure is exit 4.
        """
        if self.ok or force:
            return
        code = self.first_failure_code()
        if code in LIMIT_CODES:
            raise ResourceLimitError(
                f"{what} could not be validated: {self.reasons()}",
                hint="raise --timeout / --memory-limit (MODELFORGE_TIMEOUT / "
                "MODELFORGE_MEMORY_MB) if the model is legitimately slow or large; otherwise "
                "the file is hostile",
                code=code,
            )
        raise InvalidModelError(
            f"{what} failed validation: {self.reasons()}",
            hint="fix the model (see 'modelforge validate FILE'), or store it anyway with --force",
            code="validation_failed",
        )


def admit(
    path: Path, *, timeout_s: float | None = None, memory_mb: int | None = None
) -> AdmissionReport:
    """Validate a staged model (checks 1-8, run in a guarded child process).

    ``timeout_s`` / ``memory_mb``: the sandbox limits (None: environment, then defaults).
    """
    from modelforge.model.validate import ValidateOptions, validate_model

    opts = ValidateOptions(stop_after="smoke", timeout_s=timeout_s, memory_mb=memory_mb)
    report = validate_model(path, opts)
    data = report.to_dict()
    failures = [f"{c.code}: {c.message}" for c in report.checks if c.status == "fail"]
    return AdmissionReport(ok=report.ok, data=data, failures=failures)
