"""Acceptance on the full Synthea set: 0 rejections, stored counts match the files, a re-run adds nothing."""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter

import orjson
import pytest

from healthflow.db import connect
from ingestion.fhir.pipeline import ingest_sources
from ingestion.fhir.sources import sources_for_paths

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def distinct_resources_by_type(files):
    """Plain count from the files: distinct (id, content) per type; the raw zone keeps each content once."""
    seen: dict[str, set] = {}
    for path in files:
        for entry in orjson.loads(gzip.decompress(path.read_bytes()))["entry"]:
            resource = entry["resource"]
            digest = hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()
            seen.setdefault(resource["resourceType"], set()).add((resource["id"], digest))
    return Counter({name: len(pairs) for name, pairs in seen.items()})


def test_synthea_ingests_without_rejections(settings, shared_data):
    files = sorted((shared_data / "synthea-r4").glob("*.json.gz"))
    patient_bundles = [path for path in files if not path.name.startswith(("hospital", "practitioner"))]
    assert len(patient_bundles) == 615

    first = ingest_sources(settings, sources_for_paths([str(p) for p in files], max_bytes=4 << 20), source_ref="t")
    second = ingest_sources(settings, sources_for_paths([str(p) for p in files], max_bytes=4 << 20), source_ref="t")

    assert first.rejected == 0, first.rejected_by_reason
    with connect(settings) as connection:
        stored = Counter(dict(connection.execute("SELECT resource_type, count(*) FROM raw.resources GROUP BY 1")))
        unlinked = connection.execute(
            "SELECT count(*) FROM raw.resources WHERE patient_id IS NULL"
            " AND resource_type NOT IN ('Organization', 'Practitioner')"
        ).fetchone()[0]
    assert stored == distinct_resources_by_type(files)
    assert stored["Patient"] == 615
    assert unlinked == 0
    assert second.accepted == 0
    assert second.rejected == 0
