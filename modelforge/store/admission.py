"""What a model must pass to enter the store: validate's checks 1-8 (file to smoke run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
