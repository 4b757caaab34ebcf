"""FHIR R4 element types, read from the fhir.resources R4B models.

The de-identifier walks a resource's JSON and needs, for each element name, its FHIR type (``dateTime``,
``Reference``, ``Identifier``, a backbone element ...), whether it repeats, and the resource types a
Reference may point to. The models carry all three; lookups are cached per (model, element).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class ElementType:
    """The FHIR type of one element: a primitive name (``dateTime``) or a complex type or backbone name."""

    name: str
    is_primitive: bool
    reference_targets: tuple[str, ...] = ()


def item_annotation(annotation: Any) -> Any:
    """Strip Optional, Union with None and List, so only the element's own type remains."""
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            annotation = members[0]
        elif origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation


def _primitive_name(annotation: Any) -> str | None:
    if typing.get_origin(annotation) is typing.Annotated:
        marker = typing.get_args(annotation)[1]
        name = type(marker).__name__
        return name[0].lower() + name[1:]
    if annotation is bool:
        return "boolean"
    if annotation in (int, float, str):
        return {int: "integer", float: "decimal", str: "string"}[annotation]
    return None


@cache
def model_class(type_name: str) -> Any:
    """Return the fhir.resources R4B model class for a resource, datatype or backbone element name."""
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(type_name)


@cache
def _fields_by_json_name(type_name: str) -> dict[str, Any]:
    fields = model_class(type_name).model_fields
    return {(field.alias or name): field for name, field in fields.items()}


def model_field(type_name: str, element: str) -> Any:
    """Return the pydantic FieldInfo of ``element`` (its JSON name) in ``type_name``, or None when there is none."""
    return _fields_by_json_name(type_name).get(element)


@cache
def element_type(parent_type: str, element: str) -> ElementType | None:
    """Return the type of ``element`` inside ``parent_type``, or None when FHIR R4 defines no such element."""
    field = model_field(parent_type, element)
    if field is None:
        return None
    annotation = item_annotation(field.annotation)
    primitive = _primitive_name(annotation)
    if primitive is not None:
        return ElementType(name=primitive, is_primitive=True)

    name = getattr(annotation, "__name__", "")
    if name.endswith("Type"):
        name = name[: -len("Type")]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    targets = tuple(extra.get("enum_reference_types") or ())
    return ElementType(name=name, is_primitive=False, reference_targets=targets)


def is_resource_type(name: str) -> bool:
    """Return True when ``name`` is a FHIR R4 resource type (not a datatype or backbone element)."""
    try:
        cls = model_class(name)
    except (KeyError, ValueError, AttributeError):
        return False
    return any(base.__name__ in ("DomainResource", "Resource") for base in cls.__mro__[1:])
