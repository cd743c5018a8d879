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

    def reasons(self) -> str:
        return "; ".join(self.failures) if self.failures else "no reason recorded"


def admit(path: Path) -> AdmissionReport:
    """Validate a staged model (checks 1-8, run in a guarded child process)."""
    from modelforge.model.validate import ValidateOptions, validate_model

    report = validate_model(path, ValidateOptions(stop_after="smoke"))
    data = report.to_dict()
    failures = [f"{c.code}: {c.message}" for c in report.checks if c.status == "fail"]
    return AdmissionReport(ok=report.ok, data=data, failures=failures)
