"""Validation of de-identified resources against the FHIR R4 definitions (fhir.resources R4B models).

fhir.resources runs two kinds of checks. The structure checks cover which elements exist, their nesting,
lists against single values, choice types, required elements and JSON types. The value checks run the
validator of each primitive element (the date pattern, the id pattern, a non-empty string ...). A full
model validation took about 0.23 ms per Synthea resource on a 2-core machine, more than the
de-identification itself, and almost all of it goes to building the models for the structure checks.

De-identified resources come in few structures: 3,012 resources of 12 Synthea bundles have 106.
``ResourceValidator`` therefore validates the first resource of each structure with fhir.resources. For
every later resource of that structure it checks only the primitive values, each with the pydantic
validator of its element built from the same R4B model field. A resource the quick path does not accept is
validated in full, and the full validation decides, so the quick path can only save time.
"""

from __future__ import annotations

import re
import threading
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from pydantic import TypeAdapter, ValidationError

from healthflow.errors import DeidentificationError
from ingestion.deid.fhir_types import element_type, model_class, model_field

# At most this many problems are named in one error message.
MAX_REPORTED_PROBLEMS = 5
# Structures remembered per validator. Past the limit the memory starts over.
MAX_STRUCTURES = 4096
# Accepted values remembered per element (codes and systems repeat, dates and pseudonyms rarely do).
MAX_VALUES_PER_ELEMENT = 512

# A string or number value in compact JSON (orjson's output) follows a colon, an opening bracket or a comma,
# and a comma or a closing bracket follows it. Keys never match, because a colon follows them, and FHIR
# element names contain no comma, colon or bracket that a match could start from. The value of resourceType
# is not matched, so the structure text keeps the type of every resource, contained ones too.
_VALUE = re.compile(
    rb'(?<=[:\[,])(?<!"resourceType":)("[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?=[,\]}])'
)
# The structure text of a document is the document with every matched value replaced by 0.
_VALUE_PLACEHOLDER = b"0"


def split_values(document: bytes) -> tuple[bytes, list[bytes]]:
    """Return the structure text of a compact JSON document and its string and number values, in order."""
    parts = _VALUE.split(document)
    return _VALUE_PLACEHOLDER.join(parts[0::2]), parts[1::2]


def validate_resource(resource: dict[str, Any]) -> None:
    """Validate ``resource`` with its fhir.resources model; raise DeidentificationError when it is not valid R4.

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
    except (TypeError, RecursionError) as error:
        # A plain ValueError raised in a model validator reaches pydantic as a ValidationError, but other
        # errors pass through. Their text can quote values, so only the error type is named.
        raise DeidentificationError(
            f"de-identified {resource_type} is not valid FHIR R4 ({type(error).__name__} in validation)"
        ) from None


class ResourceValidator:
    """Validator of de-identified resources: in full once per structure, then by the values only.

    Threads may share one validator. Two threads that meet a new structure at the same time both validate
    it in full, and the caches are only added to or cleared whole.
    """

    def __init__(self) -> None:
        self._plans: dict[bytes, tuple[ValueCheck, ...] | None] = {}
        self._checks: dict[tuple[str, str], ValueCheck] = {}
        self._lock = threading.Lock()
        self.full_validations = 0

    def validate(self, resource: dict[str, Any]) -> None:
        """Raise DeidentificationError when ``resource`` is not valid FHIR R4."""
        structure, values = split_values(orjson.dumps(resource))
        if self._values_valid(structure, values):
            return

        self.full_validations += 1
        validate_resource(resource)
        self._remember(resource, structure, values)

    def _values_valid(self, structure: bytes, values: list[bytes]) -> bool:
        plan = self._plans.get(structure)
        if plan is None or len(values) != len(plan):
            return False
        for check, token in zip(plan, values, strict=True):
            if token not in check.accepted and not check.accepts(token):
                return False
        return True

    def _remember(self, resource: dict[str, Any], structure: bytes, values: list[bytes]) -> None:
        """Store the value checks of a structure that has just passed full validation."""
        plan = self._plan(resource)
        if plan is not None and len(plan) != len(values):
            plan = None  # the walk and the text disagree, so this structure always gets full validation
        with self._lock:
            if len(self._plans) >= MAX_STRUCTURES:
                self._plans.clear()
            self._plans[structure] = plan

    def _plan(self, resource: dict[str, Any]) -> tuple[ValueCheck, ...] | None:
        """Return the check of each string or number value of ``resource``, in document order."""
        checks: list[ValueCheck] = []
        try:
            self._collect(resource, str(resource["resourceType"]), checks)
        except (_NoPlan, KeyError, ValueError, AttributeError, TypeError):
            # An element the models do not describe as expected: leave this structure to full validation.
            return None
        return tuple(checks)

    def _collect(self, node: dict[str, Any], type_name: str, checks: list[ValueCheck]) -> None:
        for name, value in node.items():
            if name == "resourceType":
                continue
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, bool) or item is None:
                    continue  # kept as they are in the structure text
                if isinstance(item, dict):
                    self._collect(item, _child_type(type_name, name, item), checks)
                elif isinstance(item, (str, int, float)):
                    checks.append(self._check(type_name, name))
                else:
                    raise _NoPlan

    def _check(self, type_name: str, element: str) -> ValueCheck:
        key = (type_name, element)
        check = self._checks.get(key)
        if check is None:
            check = ValueCheck.for_element(type_name, element)
            self._checks[key] = check
        return check


class _NoPlan(Exception):  # noqa: N818 - control flow inside ResourceValidator only
    """The resource has a part the value checks do not cover, so its structure is always fully validated."""


def _child_type(type_name: str, element: str, value: dict[str, Any]) -> str:
    """Return the model name of a complex element's value (the resource type for a contained resource)."""
    found = element_type(type_name, element)
    if found is None or found.is_primitive or not found.name:
        raise _NoPlan
    if found.name != "Resource":
        return found.name
    resource_type = value.get("resourceType")
    if not isinstance(resource_type, str):
        raise _NoPlan
    return resource_type


def _is_list(annotation: Any) -> bool:
    while True:
        origin = typing.get_origin(annotation)
        if origin is list:
            return True
        if origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            annotation = members[0]
        else:
            return False


@dataclass
class ValueCheck:
    """The validator of one primitive element, built from its R4B model field, and the values it accepted."""

    adapter: TypeAdapter[Any]
    is_list: bool
    accepted: set[bytes] = field(default_factory=set)

    @classmethod
    def for_element(cls, type_name: str, element: str) -> ValueCheck:
        field_info = model_field(type_name, element)
        if field_info is None:
            raise _NoPlan
        # The field's own annotation and constraints, so a value is validated as it is inside the model.
        annotation = field_info.annotation
        if field_info.metadata:
            annotation = Annotated[annotation, *field_info.metadata]
        return cls(adapter=TypeAdapter(annotation), is_list=_is_list(field_info.annotation))

    def accepts(self, token: bytes) -> bool:
        """Return True when the JSON value ``token`` is valid for this element."""
        if token in self.accepted:
            return True
        value = orjson.loads(token)
        try:
            self.adapter.validate_python([value] if self.is_list else value)
        except (ValidationError, ValueError, TypeError):
            return False
        if len(self.accepted) >= MAX_VALUES_PER_ELEMENT:
            self.accepted.clear()
        self.accepted.add(token)
        return True
