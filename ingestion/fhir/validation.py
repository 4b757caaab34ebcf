"""R4 validation of single resources and of Bundle envelopes with fhir.resources.

fhir.resources 8 ships R4B models (``fhir.resources.R4B``); R4B reads R4 data for every resource type that
exists in both (see docs/ingestion.md for where the two differ). Bundles are validated as an envelope
(``Bundle`` without its entries' resources) plus one validation per entry resource, so one invalid entry
is reported on its own and its siblings can still be accepted.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ingestion.fhir.outcome import (
    CODE_INVALID,
    CODE_NOT_SUPPORTED,
    CODE_REQUIRED,
    CODE_STRUCTURE,
    CODE_VALUE,
    Issue,
)

MAX_PROBLEM_CHARS = 200
MIN_REDACTED_CHARS = 4

# R4 (4.0.1) resource types that R4B removed, so fhir.resources has no model for them.
R4_TYPES_MISSING_IN_R4B = frozenset(
    {
        "EffectEvidenceSynthesis",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "RiskEvidenceSynthesis",
        "SubstanceSpecification",
    }
)
# R4 types whose structure R4B redesigned: the R4B model would reject valid R4 data.
R4_TYPES_REDESIGNED_IN_R4B = frozenset({"Evidence", "EvidenceVariable"})
# R4B types that do not exist in R4; input claiming R4 must not use them.
R4B_TYPES_NOT_IN_R4 = frozenset(
    {
        "AdministrableProductDefinition",
        "Citation",
        "ClinicalUseDefinition",
        "EvidenceReport",
        "Ingredient",
        "ManufacturedItemDefinition",
        "MedicinalProductDefinition",
        "NutritionProduct",
        "PackagedProductDefinition",
        "RegulatedAuthorization",
        "SubscriptionStatus",
        "SubscriptionTopic",
    }
)
PARTIALLY_CHECKED_TYPES = R4_TYPES_MISSING_IN_R4B | R4_TYPES_REDESIGNED_IN_R4B
# Pydantic error types that mean "required element absent"; fhir.resources adds its own variant.
_MISSING_TYPES = {"missing", "model_field_validation.missing"}


@functools.lru_cache(maxsize=256)
def model_class(resource_type: str) -> type[BaseModel] | None:
    """Return the fhir.resources R4B model of ``resource_type``, or None when R4B has no such resource."""
    from fhir.resources.R4B import get_fhir_model_class

    if not resource_type.isascii() or not resource_type.isalpha() or not resource_type[:1].isupper():
        return None
    if resource_type in R4B_TYPES_NOT_IN_R4:
        return None
    if resource_type in PARTIALLY_CHECKED_TYPES:
        return get_fhir_model_class("DomainResource")
    try:
        return get_fhir_model_class(resource_type)
    except (ValueError, KeyError, ImportError, AttributeError):
        return None


def fhir_path(root: str, location: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into a FHIRPath such as ``Patient.name[0].given``."""
    path = root
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}"
    return path


def _problem_text(error: Mapping[str, Any]) -> str:
    """Return the error message without the offending value, so it can go to logs and dead letters."""
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = error.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        message = message.replace(repr(value), "")
        text = str(value)
        # Short values are left alone: replacing "x" would cut words; such values are not identifying.
        if len(text) >= MIN_REDACTED_CHARS:
            message = message.replace(text, "")
    message = " ".join(message.split()).rstrip(" .:,")
    return message[:MAX_PROBLEM_CHARS] or "invalid value"


def issue_from_pydantic(error: Mapping[str, Any], *, root: str, subject: str) -> Issue:
    """Map one pydantic error to an Issue: missing element, unknown element, wrong type or bad value."""
    kind = str(error.get("type", ""))
    expression = fhir_path(root, tuple(error.get("loc", ())))
    if kind in _MISSING_TYPES:
        return Issue(CODE_REQUIRED, expression, "required element is missing", subject)
    if kind == "extra_forbidden":
        return Issue(CODE_STRUCTURE, expression, "unknown element", subject)
    if kind.endswith("_type"):
        return Issue(CODE_STRUCTURE, expression, f"wrong type: {_problem_text(error)}", subject)
    return Issue(CODE_VALUE, expression, _problem_text(error), subject)


def check_resource_type(resource: Any, *, where: str, subject: str) -> tuple[str | None, list[Issue]]:
    """Return the resource's type when it names an R4B resource, else the issue that rejects it."""
    if not isinstance(resource, dict):
        return None, [Issue(CODE_STRUCTURE, where, "expected a JSON object (a FHIR resource)", subject)]
    resource_type = resource.get("resourceType")
    if resource_type is None:
        return None, [Issue(CODE_REQUIRED, f"{where}.resourceType", "required element is missing", subject)]
    if not isinstance(resource_type, str) or model_class(resource_type) is None:
        return None, [Issue(CODE_NOT_SUPPORTED, f"{where}.resourceType", "unknown resourceType", subject)]
    return resource_type, []


def validate_model(data: dict[str, Any], resource_type: str, *, subject: str) -> list[Issue]:
    """Validate ``data`` against the R4B model of ``resource_type``; return the issues (empty when valid)."""
    model = model_class(resource_type)
    assert model is not None
    if resource_type in PARTIALLY_CHECKED_TYPES:
        # NOTE: no R4B model fits these R4 types. Only their DomainResource elements (id, meta, text,
        # extension, contained, ...) are validated, and the type's own elements pass unchecked.
        common = set(model.model_fields) | {field.alias for field in model.model_fields.values() if field.alias}
        data = {key: value for key, value in data.items() if key in common or key.lstrip("_") in common}
        data["resourceType"] = "DomainResource"
    try:
        model.model_validate(data)
    except ValidationError as error:
        return [issue_from_pydantic(item, root=resource_type, subject=subject) for item in error.errors()]
    except (ValueError, TypeError, RecursionError):
        # Model-level validators in fhir.resources may raise plain errors; their text can hold values.
        return [Issue(CODE_INVALID, resource_type, "resource does not conform to R4", subject)]
    return []


def validate_resource(resource: Any, *, where: str = "", subject: str = "") -> list[Issue]:
    """Validate one resource; ``where`` is its place (e.g. ``Bundle.entry[3].resource``) for type issues."""
    resource_type, issues = check_resource_type(resource, where=where or "resource", subject=subject)
    if issues or resource_type is None:
        return issues
    return validate_model(resource, resource_type, subject=subject)


def bundle_envelope(bundle: dict[str, Any]) -> dict[str, Any]:
    """Return ``bundle`` with each entry's ``resource`` left out (entries are validated one by one)."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return bundle
    envelope = dict(bundle)
    envelope["entry"] = [
        {key: value for key, value in entry.items() if key != "resource"} if isinstance(entry, dict) else entry
        for entry in entries
    ]
    return envelope


def validate_bundle_envelope(bundle: dict[str, Any], *, subject: str = "Bundle") -> list[Issue]:
    """Validate a Bundle's own elements (type, entry.fullUrl, entry.request, ...), not the entry resources."""
    return validate_model(bundle_envelope(bundle), "Bundle", subject=subject)
