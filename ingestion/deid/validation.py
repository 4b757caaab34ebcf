"""Validation of de-identified resources against the FHIR R4 definitions (fhir.resources R4B models)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from healthflow.errors import DeidentificationError
from ingestion.deid.fhir_types import model_class

# At most this many problems are named in one error message.
MAX_REPORTED_PROBLEMS = 5


def validate_resource(resource: dict[str, Any]) -> None:
    """Raise DeidentificationError when ``resource`` is not valid FHIR R4.

    The message names element paths and error kinds only, never the values, because the input may hold
    patient data.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise DeidentificationError("resource has no resourceType")
    try:
        cls = model_class(resource_type)
    except (KeyError, ValueError, AttributeError) as error:
        raise DeidentificationError(f"{resource_type} is not a FHIR R4 resource type") from error
    try:
        cls.model_validate(resource)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in item['loc']) or resource_type}: {item['type']}"
            for item in error.errors(include_input=False, include_url=False)
        ]
        shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
        raise DeidentificationError(
            f"de-identified {resource_type} is not valid FHIR R4 ({len(problems)} problems: {shown})"
        ) from None
