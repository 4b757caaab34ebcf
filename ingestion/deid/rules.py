"""Load and check the de-identification rules (the allowlist YAML file).

The file format is documented at the top of ``rules.yaml``, the default rules. Loading checks every path
against the FHIR R4 definitions, so a typo fails at start-up instead of silently dropping an element, and
rejects paths to elements that must never be kept (names, telecoms, attachments, notes, narrative).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ingestion.deid.fhir_types import element_type, is_resource_type

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.yaml")

# Datatypes that hold direct identifiers or free text; they are removed wherever they occur.
FORBIDDEN_TYPES = frozenset(
    {"HumanName", "ContactPoint", "Attachment", "Annotation", "Narrative", "Signature", "FHIRPrimitiveExtension"}
)
# Address parts that may be kept: the rest (line, city, district, text, period) identifies a place.
ADDRESS_PARTS = frozenset({"use", "type", "state", "country", "postalCode"})

# Resource-level elements the de-identifier writes itself (id, meta) or always removes.
RESERVED_ELEMENTS = frozenset({"id", "meta", "text", "implicitRules", "language"})

# An allowlist tree: element name -> KEEP_SUBTREE (keep it with the datatype rules) or a nested tree.
KEEP_SUBTREE = True
AllowTree = dict[str, Any]


class RulesError(ValueError):
    """The rules file is missing, malformed, or names an element that does not exist or may not be kept."""


@dataclass(frozen=True)
class Rules:
    """The parsed allowlist: kept elements per resource type, kept extension urls, and the ZIP-3 policy."""

    resources: dict[str, AllowTree]
    extensions: frozenset[str]
    zip3_keep: bool
    zip3_restricted_prefixes: frozenset[str]
    source: str


def load_rules(path: Path | None = None) -> Rules:
    """Read and check a rules file; ``None`` reads the default rules shipped with the package."""
    path = path or DEFAULT_RULES_FILE
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise RulesError(f"de-identification rules file not found: {path}; set HEALTHFLOW_DEID_RULES_FILE") from error
    except yaml.YAMLError as error:
        raise RulesError(f"de-identification rules file {path} is not valid YAML: {error}") from error
    return parse_rules(document, source=str(path))


def parse_rules(document: Any, *, source: str) -> Rules:
    """Check a parsed rules document and build the allowlist trees."""
    if not isinstance(document, dict) or document.get("version") != 1:
        raise RulesError(f"{source}: expected a mapping with `version: 1`")
    unknown = set(document) - {"version", "extensions", "zip3", "resources"}
    if unknown:
        raise RulesError(f"{source}: unknown keys {sorted(unknown)}; allowed: version, extensions, zip3, resources")

    resources = document.get("resources")
    if not isinstance(resources, dict) or not resources:
        raise RulesError(f"{source}: `resources` must map resource types to lists of element paths")
    trees = {name: _build_tree(name, paths, source=source) for name, paths in resources.items()}

    extensions = document.get("extensions") or []
    if not isinstance(extensions, list) or not all(isinstance(url, str) for url in extensions):
        raise RulesError(f"{source}: `extensions` must be a list of extension urls")

    zip3 = document.get("zip3") or {}
    prefixes = [str(prefix) for prefix in zip3.get("restricted_prefixes", [])]
    if any(len(prefix) != 3 or not prefix.isdigit() for prefix in prefixes):
        raise RulesError(f"{source}: zip3.restricted_prefixes must be 3-digit strings")
    return Rules(
        resources=trees,
        extensions=frozenset(extensions),
        zip3_keep=bool(zip3.get("keep", False)),
        zip3_restricted_prefixes=frozenset(prefixes),
        source=source,
    )


def _build_tree(resource_type: str, paths: Any, *, source: str) -> AllowTree:
    if not is_resource_type(resource_type):
        raise RulesError(f"{source}: {resource_type} is not a FHIR R4 resource type")
    if not isinstance(paths, list) or not all(isinstance(path, str) and path for path in paths):
        raise RulesError(f"{source}: {resource_type} must list element paths as strings")

    tree: AllowTree = {}
    for path in paths:
        _check_path(resource_type, path, source=source)
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is KEEP_SUBTREE:
                break  # a parent is already kept whole
            node = child
        else:
            node[parts[-1]] = KEEP_SUBTREE
    return tree


def _check_path(resource_type: str, path: str, *, source: str) -> None:
    parts = path.split(".")
    if parts[0] in RESERVED_ELEMENTS:
        raise RulesError(
            f"{source}: {resource_type}.{path}: `{parts[0]}` is set by the de-identifier and cannot be listed"
        )
    parent = resource_type
    for part in parts:
        if part == "modifierExtension":
            raise RulesError(f"{source}: {resource_type}.{path}: a modifierExtension cannot be kept by the allowlist")
        found = element_type(parent, part)
        if found is None:
            raise RulesError(f"{source}: {resource_type}.{path}: {parent} has no element `{part}` in FHIR R4")
        if found.name in FORBIDDEN_TYPES:
            raise RulesError(
                f"{source}: {resource_type}.{path} is a {found.name}, which contains identifying data"
                " and is always removed"
            )
        if parent == "Address" and part not in ADDRESS_PARTS:
            raise RulesError(
                f"{source}: {resource_type}.{path}: only {sorted(ADDRESS_PARTS)} of an Address may be kept"
            )
        parent = found.name
