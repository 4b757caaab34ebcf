from __future__ import annotations

from ingestion.deid.scan import IdentifierSet, _birth_date_written


def identifiers() -> IdentifierSet:
    found = IdentifierSet()
    found.add("Abdul Koepp", "name")
    found.add("555-978-4581", "phone number")
    found.add("5559784581", "phone number", min_chars=7)
    found.add("313 Lockman Row Suite 4", "address line")
    found.add("018f428e-34f6-4707-8009-5ad742f901e7", "original id", min_chars=8)
    found.add("160", "identifier value")
    return found


def test_search_finds_whole_phrases() -> None:
    found = identifiers()
    assert found.search("seen with abdul koepp today") == {"name"}
    assert found.search('{"phone": "555-978-4581"}') == {"phone number"}
    assert found.search("call 5559784581") == {"phone number"}
    assert found.search("lives at 313 Lockman Row Suite 4, Peabody") == {"address line"}
    assert found.search("urn:uuid:018f428e-34f6-4707-8009-5ad742f901e7") == {"original id"}


def test_search_ignores_partial_words() -> None:
    found = identifiers()
    assert found.search("Abdul Koeppen") == set()
    assert found.search("555-978-45812") == set()
    assert found.search("313 Lockman Road") == set()


def test_short_values_are_not_searched() -> None:
    assert identifiers().search("NPI 160") == set()


def test_birth_date_only_as_birth_date_value() -> None:
    assert _birth_date_written('{"birthDate": "1956-08-03"}', {"1956-08-03"})
    assert _birth_date_written('{"birthDate":"1956-08-03"}', {"1956-08-03"})
    assert not _birth_date_written('{"effectiveDateTime": "1956-08-03T10:00:00Z"}', {"1956-08-03"})
