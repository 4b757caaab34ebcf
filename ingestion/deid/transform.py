"""The de-identification of one FHIR R4 resource: allowlist, pseudonyms, date shift, generalisation.

``Deidentifier.deidentify`` walks the resource with the FHIR type of every element (read from the
fhir.resources models) and the allowlist tree of its resource type (see ``rules.yaml`` for the rules it
applies). It never passes anything through on error: every problem raises DeidentificationError (fail
closed), and a resource type with no rule raises ResourceTypeDropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from healthflow.errors import DeidentificationError
from healthflow.pseudonym import key_bytes, patient_pseudonym, pseudonymise
from healthflow.settings import Settings
from ingestion.deid.dates import date_shift_days, parse_fhir_date, shift_fhir_date
from ingestion.deid.fhir_types import ElementType, element_type, is_resource_type
from ingestion.deid.rules import FORBIDDEN_TYPES, KEEP_SUBTREE, Rules
from ingestion.deid.validation import ResourceValidator

Profile = Literal["pseudonymised", "safe-harbor"]
PROFILES: tuple[str, ...] = ("pseudonymised", "safe-harbor")

# Returns the resource type a ``urn:uuid:...`` reference points to, or None when it is not known.
ReferenceResolver = Callable[[str], str | None]

DATE_TYPES = frozenset({"date", "dateTime", "instant"})
# Primitive types kept inside a kept subtree: codes, numbers, flags, uris and (shifted) dates. Free text
# (string, markdown) and raw ids (id, oid, uuid) are kept only where a rule names them explicitly.
AUTO_KEPT_PRIMITIVES = frozenset(
    {
        "boolean",
        "integer",
        "integer64",
        "decimal",
        "positiveInt",
        "unsignedInt",
        "code",
        "uri",
        "url",
        "canonical",
        "time",
    }
)
_QUANTITY = {
    "value": KEEP_SUBTREE,
    "comparator": KEEP_SUBTREE,
    "unit": KEEP_SUBTREE,
    "system": KEEP_SUBTREE,
    "code": KEEP_SUBTREE,
}
# Children kept for a datatype that a rule keeps whole. Datatypes not listed keep every child by its type.
DATATYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "Coding": {
        "system": KEEP_SUBTREE,
        "version": KEEP_SUBTREE,
        "code": KEEP_SUBTREE,
        "display": KEEP_SUBTREE,
        "userSelected": KEEP_SUBTREE,
    },
    "CodeableConcept": {"coding": KEEP_SUBTREE, "text": KEEP_SUBTREE},
    "Reference": {"reference": KEEP_SUBTREE, "type": KEEP_SUBTREE},
    "Identifier": {"use": KEEP_SUBTREE, "type": KEEP_SUBTREE, "system": KEEP_SUBTREE, "value": KEEP_SUBTREE},
    "Quantity": _QUANTITY,
    "Age": _QUANTITY,
    "Duration": _QUANTITY,
    "Count": _QUANTITY,
    "Distance": _QUANTITY,
    "SimpleQuantity": _QUANTITY,
    "MoneyQuantity": _QUANTITY,
    "Money": {"value": KEEP_SUBTREE, "currency": KEEP_SUBTREE},
    "Period": {"start": KEEP_SUBTREE, "end": KEEP_SUBTREE},
}
# Resource-level elements never copied: the de-identifier writes id and meta itself.
RESOURCE_SKIPPED = frozenset({"resourceType", "id", "meta", "text", "implicitRules", "language"})
US_COUNTRIES = frozenset({"US", "USA", "United States", "United States of America"})
# Elements that name the patient a resource belongs to, in the order they are looked up.
PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")
AGE_BAND_YEARS = 90

_REFERENCE = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*://[^?#]*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
# Marks every output resource as pseudonymised (HL7 v3 ObservationValue "PSEUDED").
SECURITY_LABEL = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "PSEUDED",
    "display": "pseudonymized",
}


class ResourceTypeDropped(Exception):  # noqa: N818 - an outcome, not an error: the type has no rule
    """The rules have no entry for this resource type, so it is dropped (and counted by the caller)."""

    def __init__(self, resource_type: str) -> None:
        super().__init__(f"no de-identification rule for resource type {resource_type}")
        self.resource_type = resource_type


@dataclass(frozen=True)
class DeidConfig:
    """The secret key and the settings that shape the output."""

    key: bytes
    profile: Profile
    shift_min_days: int
    shift_max_days: int
    # Living patients are placed in the 90+ band when they are 90 or older on this (unshifted) date.
    age_reference_date: date

    @classmethod
    def from_settings(cls, settings: Settings) -> DeidConfig:
        if settings.pseudonym_key is None:
            raise DeidentificationError("HEALTHFLOW_PSEUDONYM_KEY is not set; de-identification needs it")
        if settings.deid_date_shift_min_days > settings.deid_date_shift_max_days:
            raise ValueError(
                "HEALTHFLOW_DEID_DATE_SHIFT_MIN_DAYS must not exceed HEALTHFLOW_DEID_DATE_SHIFT_MAX_DAYS "
                f"(got {settings.deid_date_shift_min_days} and {settings.deid_date_shift_max_days})"
            )
        reference = settings.deid_age_reference_date or datetime.now(UTC).date().replace(month=1, day=1)
        return cls(
            key=key_bytes(settings.pseudonym_key.get_secret_value()),
            profile=settings.deid_profile,
            shift_min_days=settings.deid_date_shift_min_days,
            shift_max_days=settings.deid_date_shift_max_days,
            age_reference_date=reference,
        )


@dataclass(frozen=True)
class DeidResult:
    """One de-identified resource, with the pseudonyms the stores and topics index it by."""

    resource: dict[str, Any]
    resource_type: str
    pseudo_id: str
    patient_pseudonym: str | None


class Deidentifier:
    """Apply one rules file and one configuration to resources; safe to share between threads."""

    def __init__(self, rules: Rules, config: DeidConfig) -> None:
        if config.profile not in PROFILES:
            raise ValueError(f"unknown de-identification profile {config.profile!r}; use one of {PROFILES}")
        self.rules = rules
        self.config = config
        self.validator = ResourceValidator()

    def deidentify(
        self,
        resource: dict[str, Any],
        *,
        resource_id: str | None = None,
        patient_id: str | None = None,
        resolve: ReferenceResolver | None = None,
        validate: bool = True,
    ) -> DeidResult:
        """Return the de-identified copy of ``resource``; ``resource`` itself is not changed.

        ``resource_id`` replaces a missing ``id`` (a Bundle entry known by its fullUrl). ``patient_id`` is
        the raw id of the patient the resource belongs to, when the caller knows it. Without it, the
        patient is read from subject, patient or beneficiary. Raises ResourceTypeDropped for a type with no rule and
        DeidentificationError for anything that cannot be de-identified or does not validate.
        """
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise DeidentificationError("input is not a FHIR resource (no resourceType)")
        resource_type = resource["resourceType"]
        if resource_type not in self.rules.resources:
            raise ResourceTypeDropped(resource_type)
        raw_id = resource_id or resource.get("id")
        if not isinstance(raw_id, str) or not raw_id:
            raise DeidentificationError(f"{resource_type} has no id; the pseudonym needs one")

        patient_id = patient_id or self._patient_id(resource, resource_type, raw_id, resolve)
        shift_subject = patient_id if patient_id else f"{resource_type}/{raw_id}"
        shift_days = date_shift_days(
            self.config.key, shift_subject, min_days=self.config.shift_min_days, max_days=self.config.shift_max_days
        )
        walk = _Walk(self, shift_days=shift_days, resolve=resolve)
        output = walk.resource(resource, resource_id=raw_id, contained=False)
        if resource_type == "Patient":
            self._apply_age_band(resource, output, shift_days)
        if validate:
            self.validator.validate(output)
        return DeidResult(
            resource=output,
            resource_type=resource_type,
            pseudo_id=output["id"],
            patient_pseudonym=patient_pseudonym(self.config.key, patient_id) if patient_id else None,
        )

    def _patient_id(
        self, resource: dict[str, Any], resource_type: str, raw_id: str, resolve: ReferenceResolver | None
    ) -> str | None:
        if resource_type == "Patient":
            return raw_id
        for name in PATIENT_ELEMENTS:
            value = resource.get(name)
            reference = value.get("reference") if isinstance(value, dict) else None
            if not isinstance(reference, str):
                continue
            found = element_type(resource_type, name)
            targets = found.reference_targets if found else ()
            target = _reference_target(reference, targets, resolve)
            if target is not None and target[0] == "Patient":
                return target[1]
        return None

    def _apply_age_band(self, source: dict[str, Any], output: dict[str, Any], shift_days: int) -> None:
        """Replace the birth date of a patient aged 90 or more by the year that makes them exactly 90.

        The age is measured on the date of death, or else on ``age_reference_date``. The output year is
        taken from the shifted reference date, so it reveals neither the real birth year nor the offset.
        """
        birth_text = source.get("birthDate")
        if not isinstance(birth_text, str) or "birthDate" not in output:
            return
        birth = parse_fhir_date(birth_text, element="Patient.birthDate").value
        death_text = source.get("deceasedDateTime")
        reference = (
            parse_fhir_date(death_text, element="Patient.deceasedDateTime").value
            if isinstance(death_text, str)
            else self.config.age_reference_date
        )
        age = reference.year - birth.year - ((reference.month, reference.day) < (birth.month, birth.day))
        if age < AGE_BAND_YEARS:
            return
        shifted_reference = parse_fhir_date(
            shift_fhir_date(reference.isoformat(), shift_days, element="age reference"), element="age reference"
        ).value
        output["birthDate"] = f"{shifted_reference.year - AGE_BAND_YEARS:04d}"


def _reference_target(
    reference: str, targets: tuple[str, ...], resolve: ReferenceResolver | None
) -> tuple[str, str] | None:
    """Return (resource type, id) of a literal reference, or None when the type cannot be determined."""
    if reference.startswith("urn:uuid:"):
        uuid = reference[len("urn:uuid:") :]
        resource_type = resolve(reference) if resolve is not None else None
        if resource_type is None and len(targets) == 1 and targets[0] != "Resource":
            resource_type = targets[0]
        return (resource_type, uuid) if resource_type and uuid else None
    match = _REFERENCE.match(reference)
    if match is None or not is_resource_type(match["type"]):
        return None
    return match["type"], match["id"]


class _Walk:
    """One resource's de-identification: the shift and resolver of its patient, applied element by element."""

    def __init__(self, owner: Deidentifier, *, shift_days: int, resolve: ReferenceResolver | None) -> None:
        self.rules = owner.rules
        self.key = owner.config.key
        self.safe_harbor = owner.config.profile == "safe-harbor"
        self.shift_days = shift_days
        self.resolve = resolve

    def resource(self, resource: dict[str, Any], *, resource_id: str | None, contained: bool) -> dict[str, Any]:
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str):
            raise DeidentificationError("a contained resource has no resourceType")
        tree = self.rules.resources.get(resource_type)
        if tree is None:
            raise ResourceTypeDropped(resource_type)
        if resource.get("modifierExtension"):
            raise DeidentificationError(
                f"{resource_type}.modifierExtension is not on the allowlist; a modifier cannot be dropped safely"
            )

        output: dict[str, Any] = {"resourceType": resource_type}
        if contained:
            if resource_id:
                output["id"] = self.contained_id(resource_id)
        else:
            output["id"] = pseudonymise(self.key, resource_type, str(resource_id))
            output["meta"] = {"security": [dict(SECURITY_LABEL)]}
        body = {name: value for name, value in resource.items() if name not in RESOURCE_SKIPPED}
        output.update(self.complex(body, resource_type, tree, resource_type))
        return output

    def contained_id(self, local_id: str) -> str:
        return "c" + pseudonymise(self.key, "contained", local_id)

    def complex(self, value: Any, type_name: str, allow: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise DeidentificationError(f"{path} must be a JSON object")
        if allow is KEEP_SUBTREE:
            allow = DATATYPE_DEFAULTS.get(type_name, KEEP_SUBTREE)
        explicit = allow is not KEEP_SUBTREE

        output: dict[str, Any] = {}
        for name, child in value.items():
            if name.startswith("_"):
                continue  # primitive extensions may carry anything; they are never kept
            if name == "modifierExtension" and child:
                raise DeidentificationError(
                    f"{path}.modifierExtension is not on the allowlist; a modifier cannot be dropped safely"
                )
            if explicit and name not in allow:
                continue
            found = element_type(type_name, name)
            if found is None:
                raise DeidentificationError(f"{path}.{name} is not a FHIR R4 element")
            if found.is_primitive and found.name not in DATE_TYPES and not isinstance(child, list):
                # The common case, decided here without the element and single calls: a code, a number or
                # an explicitly kept string is copied, any other primitive is dropped.
                if child is not None and (found.name in AUTO_KEPT_PRIMITIVES or explicit):
                    output[name] = child
                continue
            kept = self.element(child, found, allow[name] if explicit else KEEP_SUBTREE, f"{path}.{name}", explicit)
            if kept is not None:
                output[name] = kept
        return output

    def element(self, value: Any, found: ElementType, allow: Any, path: str, explicit: bool) -> Any:
        if found.name in FORBIDDEN_TYPES:
            return None
        if isinstance(value, list):
            items = [self.single(item, found, allow, path, explicit) for item in value]
            kept = [item for item in items if item is not None]
            return kept or None
        return self.single(value, found, allow, path, explicit)

    def single(self, value: Any, found: ElementType, allow: Any, path: str, explicit: bool) -> Any:
        name = found.name
        if found.is_primitive:
            return self.primitive(value, name, path, explicit)
        if name == "Extension":
            return self.extension(value, path)
        if name == "Reference":
            return self.reference(value, allow, found.reference_targets, path)
        if name == "Identifier":
            return self.identifier(value, allow, path)
        if name == "Address":
            return self.address(value, path)
        if name == "Resource":
            return self.contained(value, path)
        return self.complex(value, name, allow, path) or None

    def primitive(self, value: Any, type_name: str, path: str, explicit: bool) -> Any:
        if type_name in DATE_TYPES:
            return self.date(value, type_name, path)
        if type_name in AUTO_KEPT_PRIMITIVES or explicit:
            return value
        return None

    def date(self, value: Any, type_name: str, path: str) -> str | None:
        if not isinstance(value, str):
            raise DeidentificationError(f"{path} must be a {type_name} string")
        shifted = shift_fhir_date(value, self.shift_days, element=path)
        if not self.safe_harbor:
            return shifted
        if type_name == "instant":
            return None  # an instant cannot be written at year precision
        return shifted[:4]

    def reference(self, value: Any, allow: Any, targets: tuple[str, ...], path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            raise DeidentificationError(f"{path} must be a Reference object")
        keep = DATATYPE_DEFAULTS["Reference"] if allow is KEEP_SUBTREE else allow
        output: dict[str, Any] = {}
        if "reference" in keep and value.get("reference") is not None:
            output["reference"] = self.reference_text(value["reference"], targets, path)
        if "type" in keep and isinstance(value.get("type"), str):
            output["type"] = value["type"]
        if "display" in keep and isinstance(value.get("display"), str):
            output["display"] = value["display"]
        return output or None

    def reference_text(self, reference: Any, targets: tuple[str, ...], path: str) -> str:
        if not isinstance(reference, str) or not reference:
            raise DeidentificationError(f"{path}.reference must be a non-empty string")
        if reference.startswith("#"):
            return "#" + self.contained_id(reference[1:]) if len(reference) > 1 else "#"
        if "?" in reference:
            raise DeidentificationError(f"{path}: conditional references (Type?search) are not supported")
        target = _reference_target(reference, targets, self.resolve)
        if target is None:
            raise DeidentificationError(
                f"{path}: the reference is not a relative, absolute, contained or resolvable urn:uuid reference"
            )
        resource_type, raw_id = target
        return f"{resource_type}/{pseudonymise(self.key, resource_type, raw_id)}"

    def identifier(self, value: Any, allow: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            raise DeidentificationError(f"{path} must be an Identifier object")
        if self.safe_harbor:
            return None  # Safe Harbor removes identifiers, even keyed pseudonyms of them
        keep = DATATYPE_DEFAULTS["Identifier"] if allow is KEEP_SUBTREE else allow
        output: dict[str, Any] = {}
        for name in ("use", "system"):
            if name in keep and isinstance(value.get(name), str):
                output[name] = value[name]
        if "type" in keep and value.get("type") is not None:
            output["type"] = self.complex(value["type"], "CodeableConcept", KEEP_SUBTREE, f"{path}.type")
        raw_value = value.get("value")
        if "value" in keep and raw_value is not None:
            if not isinstance(raw_value, str) or not raw_value:
                raise DeidentificationError(f"{path}.value must be a non-empty string")
            output["value"] = pseudonymise(self.key, f"identifier|{value.get('system', '')}", raw_value)
        return output or None

    def address(self, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            raise DeidentificationError(f"{path} must be an Address object")
        output = {name: value[name] for name in ("use", "type", "state", "country") if isinstance(value.get(name), str)}
        postal = value.get("postalCode")
        is_us = value.get("country", "US") in US_COUNTRIES
        if self.rules.zip3_keep and is_us and isinstance(postal, str):
            prefix = postal.strip()[:3]
            if len(prefix) == 3 and prefix.isdigit():
                output["postalCode"] = "000" if prefix in self.rules.zip3_restricted_prefixes else prefix
        return output or None

    def extension(self, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            raise DeidentificationError(f"{path} must be an Extension object")
        if value.get("url") not in self.rules.extensions:
            return None
        return self.allowed_extension(value, path)

    def allowed_extension(self, value: Any, path: str) -> dict[str, Any]:
        """Copy an allowlisted extension: its url, its nested extensions and its value, by type."""
        if not isinstance(value, dict) or not isinstance(value.get("url"), str):
            raise DeidentificationError(f"{path} must be an Extension object with a url")
        output: dict[str, Any] = {"url": value["url"]}
        nested = value.get("extension")
        if nested:
            output["extension"] = [self.allowed_extension(item, f"{path}.extension") for item in nested]
        for name, child in value.items():
            if not name.startswith("value"):
                continue
            found = element_type("Extension", name)
            if found is None:
                raise DeidentificationError(f"{path}.{name} is not a FHIR R4 element")
            kept = self.single(child, found, KEEP_SUBTREE, f"{path}.{name}", explicit=True)
            if kept is not None:
                output[name] = kept
        return output

    def contained(self, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            raise DeidentificationError(f"{path} must be a resource object")
        try:
            return self.resource(value, resource_id=value.get("id"), contained=True)
        except ResourceTypeDropped:
            return None  # a contained type with no rule is dropped like a top-level one
