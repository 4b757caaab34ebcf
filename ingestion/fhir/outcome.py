"""FHIR OperationOutcome issues for rejected input, and the PHI-free reason text for the dead letter.

An ``Issue`` has two texts. ``diagnostics`` goes to the caller who sent the input and names the resource
(type and id, or its place in the file). ``reason`` goes to the dead-letter table and topic: element paths
and problem kinds only, never a value, an id or a file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# OperationOutcome.issue.code values used here (FHIR R4 value set issue-type).
CODE_STRUCTURE = "structure"
CODE_REQUIRED = "required"
CODE_VALUE = "value"
CODE_INVALID = "invalid"
CODE_NOT_SUPPORTED = "not-supported"
CODE_TOO_COSTLY = "too-costly"
CODE_EXCEPTION = "exception"
CODE_INFORMATIONAL = "informational"


@dataclass(frozen=True)
class Issue:
    """One problem with one element: FHIRPath ``expression``, issue-type ``code`` and the two texts."""

    code: str
    expression: str
    problem: str
    subject: str = ""

    @property
    def reason(self) -> str:
        """Return the dead-letter text: element path and problem kind, without any value."""
        return f"{self.expression}: {self.problem}" if self.expression else self.problem

    @property
    def diagnostics(self) -> str:
        return f"{self.subject}: {self.reason}" if self.subject else self.reason

    def to_fhir(self, severity: str = "error") -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def operation_outcome(issues: list[Issue], *, severity: str = "error") -> dict[str, Any]:
    """Return an OperationOutcome resource with one issue per entry of ``issues``."""
    return {"resourceType": "OperationOutcome", "issue": [issue.to_fhir(severity) for issue in issues]}


def informational_outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": CODE_INFORMATIONAL, "diagnostics": text}],
    }


def reason_of(issues: list[Issue], *, max_issues: int = 5) -> str:
    """Join the PHI-free reasons of ``issues`` (at most ``max_issues``, then a count of the rest)."""
    reasons = [issue.reason for issue in issues[:max_issues]]
    if len(issues) > max_issues:
        reasons.append(f"and {len(issues) - max_issues} more issues")
    return "; ".join(reasons)
