"""Keyed pseudonyms: HMAC-SHA256 with the secret pseudonym key.

The same (kind, value) gives the same pseudonym in every resource, run and stage, so references keep
resolving after de-identification, and a clinical system that holds a real patient id can ask for a score
by that id: the service derives the pseudonym and never stores the id. Without the key a pseudonym cannot
be reversed or recomputed, so the key must be kept out of the stores and topics it protects.
"""

from __future__ import annotations

import hashlib
import hmac

# 128 bits of the HMAC output: collisions are negligible for any hospital's population, and ids stay short.
PSEUDONYM_HEX_CHARS = 32


def pseudonymise(key: bytes, kind: str, value: str) -> str:
    """Return the pseudonym of ``value`` in namespace ``kind`` (a resource type such as "Patient", or "identifier")."""
    if not value:
        raise ValueError(f"cannot pseudonymise an empty {kind} value")
    digest = hmac.new(key, f"{kind}|{value}".encode(), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_HEX_CHARS]


def patient_pseudonym(key: bytes, patient_id: str) -> str:
    """Return the pseudonym of a Patient resource id; Kafka keys and feature rows use this one."""
    return pseudonymise(key, "Patient", patient_id)


def key_bytes(secret: str) -> bytes:
    return secret.encode("utf-8")
