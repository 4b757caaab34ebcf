"""Turn one Submission into resources to store and rejections, following FHIR Bundle semantics.

This module is pure (no database, no broker), so it can run in worker processes. Rules:
- A Bundle's own elements are validated first; a Bundle with an invalid envelope (no ``type``, say) is
  rejected whole, because its processing rules are unknown.
- ``transaction``: all or nothing. One invalid entry rejects the whole Bundle as one rejection listing every
  issue; no entry is stored.
- ``batch``, ``collection``, ``searchset`` and the other types: each entry stands alone; an invalid entry is
  rejected and its valid siblings are stored. Searchset entries with ``search.mode = outcome`` are skipped.
- A resource without ``id`` gets a server-assigned one: the uuid of a ``urn:uuid:`` fullUrl when there is
  one, else a name-based UUID of its content hash, so sending the same content again is still a no-op.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingestion.fhir.linking import FullUrlIndex, full_url_index, patient_id_of
from ingestion.fhir.outcome import CODE_NOT_SUPPORTED, CODE_VALUE, Issue
from ingestion.fhir.sources import Submission, parse_json
from ingestion.fhir.validation import check_resource_type, validate_bundle_envelope, validate_model

# Name space of the ids this stage assigns to resources that arrive without one.
ASSIGNED_ID_NAMESPACE = uuid.UUID("6f1c1f9e-3d0e-4b8e-9a57-2f7c0f4d1a11")
PER_ENTRY_BUNDLE_TYPES = {"batch", "collection", "searchset", "history", "document", "message"}


@dataclass
class Candidate:
    """A valid resource ready for the raw zone. ``content_json`` is canonical JSON (sorted keys)."""

    resource_type: str
    resource_id: str
    patient_id: str | None
    content_json: bytes
    content_hash: str
    source_ref: str
    entry_index: int | None = None


@dataclass
class Rejection:
    """Rejected input: the issues, the input text (kept in the raw zone only) and where it came from."""

    source_ref: str
    issues: list[Issue]
    content: str
    resource_type: str | None = None
    entry_index: int | None = None


@dataclass
class Checked:
    """The result of checking one submission. ``entry_count`` is 0 for a single resource."""

    source_ref: str
    bundle_type: str | None = None
    entry_count: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    skipped_entries: list[int] = field(default_factory=list)


def content_hash(canonical_json: bytes) -> str:
    return hashlib.sha256(canonical_json).hexdigest()


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _subject(resource: Any, entry_index: int | None) -> str:
    """Name a resource for the caller's OperationOutcome: ``Type/id``, else its entry number."""
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    resource_id = resource.get("id") if isinstance(resource, dict) else None
    name = resource_type if isinstance(resource_type, str) and resource_type.isalnum() else "resource"
    if isinstance(resource_id, str) and resource_id:
        name = f"{name}/{resource_id}"
    return name if entry_index is None else f"{name} (Bundle.entry[{entry_index}])"


def _assigned_id(full_url: Any, canonical_json: bytes) -> str:
    if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
        candidate = full_url.removeprefix("urn:uuid:")
        if 0 < len(candidate) <= 64:
            return candidate
    return str(uuid.uuid5(ASSIGNED_ID_NAMESPACE, content_hash(canonical_json)))


def _candidate(
    resource: dict[str, Any],
    *,
    source_ref: str,
    index: FullUrlIndex,
    entry_index: int | None = None,
    full_url: Any = None,
) -> Candidate:
    canonical = _canonical(resource)
    digest = content_hash(canonical)
    resource_id = resource.get("id")
    if not isinstance(resource_id, str) or not resource_id:
        resource_id = _assigned_id(full_url, canonical)
        resource = {**resource, "id": resource_id}
        canonical = _canonical(resource)
    return Candidate(
        resource_type=resource["resourceType"],
        resource_id=resource_id,
        patient_id=patient_id_of(resource, index),
        content_json=canonical,
        content_hash=digest,
        source_ref=source_ref if entry_index is None else f"{source_ref}#entry={entry_index}",
        entry_index=entry_index,
    )


def _nul_issue(candidate: Candidate, subject: str) -> list[Issue]:
    """PostgreSQL jsonb cannot store U+0000, so a resource containing it is rejected rather than lost."""
    if b"\\u0000" in candidate.content_json:
        return [Issue(CODE_VALUE, candidate.resource_type, "a string contains the NUL character (U+0000)", subject)]
    return []


def _check_one(resource: Any, *, where: str, subject: str) -> list[Issue]:
    resource_type, issues = check_resource_type(resource, where=where, subject=subject)
    if issues or resource_type is None:
        return issues
    return validate_model(resource, resource_type, subject=subject)


def check_submission(submission: Submission) -> Checked:
    """Parse and validate one submission; never raises for bad input."""
    checked = Checked(submission.source_ref)
    text = submission.data.decode("utf-8", "replace")
    if submission.issues:
        checked.rejections.append(Rejection(submission.source_ref, submission.issues, text))
        return checked

    value, issues = parse_json(submission.data)
    if issues:
        checked.rejections.append(Rejection(submission.source_ref, issues, text))
        return checked
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        _check_bundle(value, text, checked)
        return checked

    subject = _subject(value, None)
    issues = _check_one(value, where="resource", subject=subject)
    if not issues:
        candidate = _candidate(value, source_ref=submission.source_ref, index={})
        issues = _nul_issue(candidate, subject)
        if not issues:
            checked.candidates.append(candidate)
            return checked
    resource_type = value.get("resourceType") if isinstance(value, dict) else None
    known_type = resource_type if issues[0].code != CODE_NOT_SUPPORTED else None
    checked.rejections.append(Rejection(submission.source_ref, issues, text, known_type))
    return checked


def _check_bundle(bundle: dict[str, Any], text: str, checked: Checked) -> None:
    issues = validate_bundle_envelope(bundle, subject=_subject(bundle, None))
    if issues:
        checked.rejections.append(Rejection(checked.source_ref, issues, text, "Bundle"))
        return

    bundle_type = bundle["type"]
    entries = bundle.get("entry") or []
    checked.bundle_type, checked.entry_count = bundle_type, len(entries)
    index = full_url_index(entries)
    entry_rejections: list[Rejection] = []
    for position, entry in enumerate(entries):
        resource = entry.get("resource")
        search_mode = (entry.get("search") or {}).get("mode")
        if bundle_type == "searchset" and search_mode == "outcome":
            continue
        subject = _subject(resource, position)
        if resource is None:
            # A read or delete request (GET, HEAD, DELETE) has nothing to store: the raw zone is append-only.
            checked.skipped_entries.append(position)
            continue
        issues = _check_one(resource, where=f"Bundle.entry[{position}].resource", subject=subject)
        if not issues:
            candidate = _candidate(
                resource,
                source_ref=checked.source_ref,
                index=index,
                entry_index=position,
                full_url=entry.get("fullUrl"),
            )
            issues = _nul_issue(candidate, subject)
        if issues:
            resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
            known_type = resource_type if issues[0].code != CODE_NOT_SUPPORTED else None
            entry_text = orjson.dumps(resource).decode()
            entry_rejections.append(Rejection(checked.source_ref, issues, entry_text, known_type, position))
            continue
        checked.candidates.append(candidate)

    if bundle_type == "transaction" and entry_rejections:
        # All or nothing: nothing from this Bundle is stored, and the Bundle is dead-lettered whole.
        all_issues = [issue for rejection in entry_rejections for issue in rejection.issues]
        checked.candidates.clear()
        checked.rejections.append(Rejection(checked.source_ref, all_issues, text, "Bundle"))
        return
    checked.rejections.extend(entry_rejections)
