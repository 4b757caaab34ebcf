"""Pulling from a FHIR server: REST search with paging and Bulk Data $export, with _since.

The server is a small Starlette app started on 127.0.0.1 by the test. It serves the resources of a few
Synthea Bundles; half of them are dated (meta-less, server-side lastUpdated) before 2024-03-01, half after.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from healthflow.db import connect
from ingestion.fhir.http_app import running_in_thread
from ingestion.fhir.pipeline import ingest_sources
from ingestion.fhir.sources import BulkExportSource, RestSearchSource

pytestmark = pytest.mark.integration

OLD, NEW = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
SPLIT = datetime(2024, 3, 1, tzinfo=UTC)
TYPES = ["Patient", "Encounter", "Condition", "Observation"]


def load_resources(shared_data, count=3):
    resources = []
    for path in sorted((shared_data / "synthea-r4").glob("[A-Z]*_*.json.gz"))[:count]:
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        resources += [entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] in TYPES]
    # Every second resource counts as updated after SPLIT.
    return [(resource, NEW if position % 2 else OLD) for position, resource in enumerate(resources)]


def fhir_server(resources):
    """A FHIR server with type search (_count, _lastUpdated=gt, paging) and a Bulk Data $export."""
    jobs: dict[str, dict] = {}

    def matching(resource_type, since):
        return [
            r for r, updated in resources if r["resourceType"] == resource_type and (since is None or updated > since)
        ]

    def parse_since(value):
        return datetime.fromisoformat(value) if value else None

    async def search(request: Request) -> Response:
        resource_type = request.path_params["resource_type"]
        count = int(request.query_params.get("_count", "10"))
        offset = int(request.query_params.get("_offset", "0"))
        last_updated = request.query_params.get("_lastUpdated", "")
        found = matching(resource_type, parse_since(last_updated.removeprefix("gt")))
        page = found[offset : offset + count]
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "link": [{"relation": "self", "url": str(request.url)}],
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in page],
        }
        if offset + count < len(found):
            base = str(request.base_url).rstrip("/")
            params = {"_count": count, "_offset": offset + count} | (
                {"_lastUpdated": last_updated} if last_updated else {}
            )
            query = urlencode(params)
            bundle["link"].append({"relation": "next", "url": f"{base}/fhir/{resource_type}?{query}"})
        return JSONResponse(bundle, media_type="application/fhir+json")

    async def kick_off(request: Request) -> Response:
        if request.headers.get("prefer") != "respond-async":
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=400)
        job = str(len(jobs) + 1)
        types = request.query_params.get("_type", ",".join(TYPES)).split(",")
        jobs[job] = {"types": types, "since": parse_since(request.query_params.get("_since")), "polls": 0}
        return Response(status_code=202, headers={"Content-Location": f"/fhir/_status/{job}"})

    async def status(request: Request) -> Response:
        job = jobs[request.path_params["job"]]
        if request.method == "DELETE":
            return Response(status_code=202)
        job["polls"] += 1
        if job["polls"] < 2:
            return Response(status_code=202, headers={"Retry-After": "0", "X-Progress": "in progress"})
        base = str(request.base_url).rstrip("/")
        output = [
            {"type": t, "url": f"{base}/fhir/_files/{request.path_params['job']}/{t}.ndjson"} for t in job["types"]
        ]
        manifest = {"transactionTime": "2024-07-01T00:00:00+00:00", "request": "x", "output": output, "error": []}
        return JSONResponse(manifest)

    async def file(request: Request) -> Response:
        job = jobs[request.path_params["job"]]
        resource_type = request.path_params["name"].removesuffix(".ndjson")
        lines = [json.dumps(r) for r in matching(resource_type, job["since"])]
        return Response("\n".join(lines) + "\n", media_type="application/fhir+ndjson")

    return Starlette(
        routes=[
            Route("/fhir/$export", kick_off),
            Route("/fhir/_status/{job}", status, methods=["GET", "DELETE"]),
            Route("/fhir/_files/{job}/{name}", file),
            Route("/fhir/{resource_type}", search),
        ]
    )


def stored_count(settings):
    with connect(settings) as connection:
        return connection.execute("SELECT count(*), count(DISTINCT batch_id) FROM raw.resources").fetchone()[0]


def rest_source(base_url, since=None):
    return RestSearchSource(
        f"{base_url}/fhir", resource_types=TYPES, since=since, page_size=25, max_bytes=4 << 20, timeout_seconds=30
    )


def bulk_source(base_url, since=None):
    return BulkExportSource(
        f"{base_url}/fhir",
        resource_types=TYPES,
        since=since,
        max_bytes=4 << 20,
        timeout_seconds=30,
        max_poll_seconds=30,
    )


def test_rest_search_follows_pages(settings, shared_data):
    resources = load_resources(shared_data)
    settings = settings.model_copy(update={"ingest_validation_workers": 0})
    with running_in_thread(fhir_server(resources)) as base_url:
        summary = ingest_sources(settings, [rest_source(base_url)], source_ref=base_url)
        again = ingest_sources(settings, [rest_source(base_url)], source_ref=base_url)
    assert len(resources) > 100  # several pages of 25 per type
    assert summary.accepted == len(resources)
    assert summary.rejected == 0
    assert again.accepted == 0
    assert stored_count(settings) == len(resources)


def test_rest_search_since_pulls_newer_only(settings, shared_data):
    resources = load_resources(shared_data)
    settings = settings.model_copy(update={"ingest_validation_workers": 0})
    with running_in_thread(fhir_server(resources)) as base_url:
        summary = ingest_sources(settings, [rest_source(base_url, SPLIT)], source_ref=base_url)
    assert summary.accepted == sum(1 for _, updated in resources if updated > SPLIT)


def test_bulk_export_full_then_incremental(settings, shared_data):
    resources = load_resources(shared_data)
    settings = settings.model_copy(update={"ingest_validation_workers": 0})
    with running_in_thread(fhir_server(resources)) as base_url:
        source = bulk_source(base_url)
        summary = ingest_sources(settings, [source], source_ref=base_url)
        incremental = ingest_sources(settings, [bulk_source(base_url, SPLIT)], source_ref=base_url)
    assert summary.accepted == len(resources)
    assert source.transaction_time == "2024-07-01T00:00:00+00:00"
    assert incremental.accepted == 0
    assert incremental.unchanged == sum(1 for _, updated in resources if updated > SPLIT)
    with connect(settings) as connection:
        sources = {row[0] for row in connection.execute("SELECT DISTINCT source FROM raw.resources")}
    assert sources == {"bulk"}
