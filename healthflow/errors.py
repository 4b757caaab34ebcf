"""The domain errors shared by every stage.

Each error knows its HTTP status and a short machine-readable code, so that an HTTP edge can turn it into
JSON problem details (RFC 9457) or, at the FHIR edge, an OperationOutcome. Error messages must never
contain patient data: they name resource types, element paths, pseudonyms and counts only.
"""

from __future__ import annotations

from typing import Any


class HealthFlowError(Exception):
    """Base class; ``status`` is the HTTP status an API returns for it."""

    status = 500
    code = "internal-error"
    title = "Internal error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """Return the error as an RFC 9457 problem details object."""
        problem: dict[str, Any] = {
            "type": f"https://healthflow.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.message,
        }
        if instance:
            problem["instance"] = instance
        problem.update(self.details)
        return problem


class InvalidInputError(HealthFlowError):
    status = 400
    code = "invalid-input"
    title = "Invalid input"


class UnprocessableError(HealthFlowError):
    status = 422
    code = "unprocessable"
    title = "Unprocessable input"


class NotFoundError(HealthFlowError):
    status = 404
    code = "not-found"
    title = "Not found"


class AuthenticationError(HealthFlowError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class PermissionDeniedError(HealthFlowError):
    status = 403
    code = "forbidden"
    title = "Permission denied"


class ServiceUnavailableError(HealthFlowError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"


class DeidentificationError(HealthFlowError):
    """A resource could not be de-identified; it must not be published (fail closed)."""

    status = 422
    code = "deidentification-failed"
    title = "De-identification failed"


def internal_problem(instance: str | None = None) -> dict[str, Any]:
    """Return the problem details for an unexpected exception, without its text (it may hold patient data)."""
    return HealthFlowError("an unexpected error occurred; the server log has the details").to_problem(instance)
