from __future__ import annotations

import pytest

from healthflow.pseudonym import PSEUDONYM_HEX_CHARS, patient_pseudonym, pseudonymise


def test_pseudonym_is_stable_for_same_key() -> None:
    assert patient_pseudonym(b"key-1", "123") == patient_pseudonym(b"key-1", "123")


def test_pseudonym_changes_with_key() -> None:
    assert patient_pseudonym(b"key-1", "123") != patient_pseudonym(b"key-2", "123")


def test_pseudonym_depends_on_kind() -> None:
    assert pseudonymise(b"k", "Patient", "123") != pseudonymise(b"k", "Encounter", "123")


def test_pseudonym_length_and_alphabet() -> None:
    value = patient_pseudonym(b"k", "123")
    assert len(value) == PSEUDONYM_HEX_CHARS
    assert set(value) <= set("0123456789abcdef")
    assert "123" not in value


def test_empty_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty Patient"):
        pseudonymise(b"k", "Patient", "")
