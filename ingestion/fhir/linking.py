"""Link resources to their patient through subject/patient references.

A reference may be relative (``Patient/123``, with or without ``/_history/n``), absolute
(``https://host/fhir/Patient/123``) or a Bundle-local ``urn:uuid:...`` that names another entry's fullUrl.
Resources keep their references as received; the resolved Patient id goes to raw.resources.patient_id.
"""

from __future__ import annotations

from typing import Any

# Elements that point at the resource's patient, in the order they are tried. RelatedPerson, Coverage
# (beneficiary) and Account-like resources use the other names.
PATIENT_REFERENCE_ELEMENTS = ("subject", "patient", "beneficiary")

FullUrlIndex = dict[str, tuple[str, str]]


def full_url_index(entries: list[Any]) -> FullUrlIndex:
    """Map each entry's fullUrl to (resourceType, id) of its resource, for resolving urn:uuid references."""
    index: FullUrlIndex = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        full_url, resource = entry.get("fullUrl"), entry.get("resource")
        if isinstance(full_url, str) and isinstance(resource, dict):
            resource_type, resource_id = resource.get("resourceType"), resource.get("id")
            if isinstance(resource_type, str) and isinstance(resource_id, str):
                index[full_url] = (resource_type, resource_id)
    return index


def resolve_reference(reference: str, index: FullUrlIndex) -> tuple[str, str] | None:
    """Return (resourceType, id) named by ``reference``, or None for contained, logical or unknown forms."""
    if reference in index:
        return index[reference]
    if reference.startswith(("urn:", "#")):
        return None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-1]:
        return parts[-2], parts[-1]
    return None


def patient_id_of(resource: dict[str, Any], index: FullUrlIndex) -> str | None:
    """Return the id of the Patient this resource belongs to (its own id for a Patient), or None."""
    if resource.get("resourceType") == "Patient":
        resource_id = resource.get("id")
        return resource_id if isinstance(resource_id, str) else None
    for element in PATIENT_REFERENCE_ELEMENTS:
        value = resource.get(element)
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
            continue
        target = resolve_reference(value["reference"], index)
        if target and target[0] == "Patient":
            return target[1]
    return None
