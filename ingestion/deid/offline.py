"""Offline de-identification of one file: a FHIR Bundle (JSON, optionally gzipped) or NDJSON.

The same rules and key as the worker apply, so a resource de-identified here gets the same pseudonyms and
the same date shift as in the deid zone. ``urn:uuid`` references are resolved with the Bundle's fullUrl
map; in NDJSON, with the ids of the resources in the same file.
"""

from __future__ import annotations

import gzip
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from healthflow.errors import DeidentificationError, InvalidInputError
from ingestion.deid.transform import Deidentifier, DeidResult, ReferenceResolver, ResourceTypeDropped

logger = logging.getLogger(__name__)


@dataclass
class FileReport:
    """Counts of one offline run, by resource type; ``failures`` holds (resource type, reason)."""

    read: Counter[str] = field(default_factory=Counter)
    written: Counter[str] = field(default_factory=Counter)
    dropped_types: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": dict(self.read),
            "written": dict(self.written),
            "dropped_types": dict(self.dropped_types),
            "failed": len(self.failures),
            "failure_reasons": dict(Counter(reason for _, reason in self.failures)),
        }


def read_document(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise InvalidInputError(f"cannot read {path}: {error.strerror or error}") from error


def bundle_entries(document: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """Return (fullUrl, resource) for each entry of a Bundle; a bare resource is one entry."""
    if document.get("resourceType") != "Bundle":
        return [(None, document)]
    entries = []
    for position, entry in enumerate(document.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise InvalidInputError(f"Bundle entry {position} has no resource")
        entries.append((entry.get("fullUrl"), resource))
    return entries


def parse_file(path: Path) -> list[tuple[str | None, dict[str, Any]]]:
    """Read a Bundle, a single resource, or NDJSON (one resource per line) into (fullUrl, resource) pairs."""
    data = read_document(path)
    name = path.name.removesuffix(".gz")
    if name.endswith((".ndjson", ".jsonl")):
        entries: list[tuple[str | None, dict[str, Any]]] = []
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise InvalidInputError(f"{path}: line {number} is not valid JSON") from error
            if not isinstance(resource, dict):
                raise InvalidInputError(f"{path}: line {number} is not a FHIR resource (a JSON object)")
            entries.append((None, resource))
        return entries
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"{path} is not valid JSON; expected a FHIR Bundle or NDJSON (.ndjson)") from error
    if not isinstance(document, dict):
        raise InvalidInputError(f"{path} is not a FHIR resource or Bundle")
    return bundle_entries(document)


def entry_resolver(entries: list[tuple[str | None, dict[str, Any]]]) -> ReferenceResolver:
    """Map ``urn:uuid:`` fullUrls (and, failing that, resource ids) to resource types."""
    types: dict[str, str] = {}
    for full_url, resource in entries:
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str):
            continue
        if isinstance(resource.get("id"), str):
            types.setdefault("urn:uuid:" + resource["id"], resource_type)
        if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
            types[full_url] = resource_type
    return types.get


def entry_id(full_url: str | None, resource: dict[str, Any]) -> str | None:
    """Return the resource id, or the uuid of a ``urn:uuid`` fullUrl when the resource has none."""
    if isinstance(resource.get("id"), str):
        return resource["id"]
    if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
        return full_url[len("urn:uuid:") :]
    return None


def deidentify_entries(
    deidentifier: Deidentifier,
    entries: list[tuple[str | None, dict[str, Any]]],
    report: FileReport,
    *,
    resolve: ReferenceResolver | None = None,
) -> Iterator[DeidResult]:
    """Yield the de-identified resources; failures and dropped types are counted, never yielded."""
    resolve = resolve or entry_resolver(entries)
    for full_url, resource in entries:
        resource_type = str(resource.get("resourceType"))
        report.read[resource_type] += 1
        try:
            result = deidentifier.deidentify(resource, resource_id=entry_id(full_url, resource), resolve=resolve)
        except ResourceTypeDropped:
            report.dropped_types[resource_type] += 1
            continue
        except DeidentificationError as error:
            report.failures.append((resource_type, error.message))
            logger.warning("%s not de-identified and left out: %s", resource_type, error.message)
            continue
        report.written[resource_type] += 1
        yield result


def deidentify_file(deidentifier: Deidentifier, source: Path, target: Path) -> FileReport:
    """De-identify ``source`` into ``target``: a Bundle becomes a collection Bundle, NDJSON stays NDJSON."""
    entries = parse_file(source)
    report = FileReport()
    results = list(deidentify_entries(deidentifier, entries, report))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.name.removesuffix(".gz").endswith((".ndjson", ".jsonl")):
        payload = b"".join(orjson.dumps(result.resource) + b"\n" for result in results)
    else:
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": f"{result.resource_type}/{result.pseudo_id}", "resource": result.resource}
                for result in results
            ],
        }
        payload = orjson.dumps(bundle)
    opener = gzip.open if target.suffix == ".gz" else open
    with opener(target, "wb") as handle:
        handle.write(payload)
    return report
