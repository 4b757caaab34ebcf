"""The FHIR HTTP endpoint: Bundle responses, OperationOutcomes, dead letters, and a fuzz test for 500s."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from healthflow.db import connect
from ingestion.fhir.http_app import create_app, running_in_thread

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def client(settings):
    with running_in_thread(create_app(settings)) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        yield http


def count(settings, table):
    with connect(settings) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_transaction_gets_transaction_response(client, settings):
    body = (FIXTURES / "transaction_urn.json").read_bytes()
    response = client.post("/fhir", content=body, headers=FHIR_JSON)
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["type"] == "transaction-response"
    assert [entry["response"]["status"] for entry in bundle["entry"]] == ["201 Created"] * 3
    assert bundle["entry"][0]["response"]["location"] == "Patient/tu-patient/_history/1"

    again = client.post("/fhir", content=body, headers=FHIR_JSON).json()
    assert [entry["response"]["status"] for entry in again["entry"]] == ["200 OK"] * 3
    assert count(settings, "raw.resources") == 3


def test_invalid_transaction_stores_nothing(client, settings):
    response = client.post("/fhir", content=(FIXTURES / "transaction_invalid.json").read_bytes(), headers=FHIR_JSON)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"][0].startswith("Encounter.")
    assert count(settings, "raw.resources") == 0
    assert count(settings, "ops.dead_letter") == 1


def test_batch_rejects_only_invalid_entry(client, settings):
    response = client.post("/fhir", content=(FIXTURES / "malformed_date.json").read_bytes(), headers=FHIR_JSON)
    bundle = response.json()
    assert bundle["type"] == "batch-response"
    statuses = [entry["response"]["status"] for entry in bundle["entry"]]
    assert statuses == ["201 Created", "400 Bad Request"]
    issue = bundle["entry"][1]["response"]["outcome"]["issue"][0]
    assert issue["expression"] == ["Patient.birthDate"]
    assert "Patient/md-bad" in issue["diagnostics"]
    assert count(settings, "raw.resources") == 1
    assert count(settings, "raw.rejected") == 1


def test_single_resource_created_with_location(client):
    resource = {"resourceType": "Patient", "id": "http-p1", "gender": "female"}
    response = client.post("/fhir/Patient", content=json.dumps(resource), headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.headers["location"] == "Patient/http-p1/_history/1"


def test_resource_type_must_match_url(client, settings):
    resource = {"resourceType": "Patient", "id": "http-p2"}
    response = client.post("/fhir/Observation", content=json.dumps(resource), headers=FHIR_JSON)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["resourceType"]
    assert count(settings, "ops.dead_letter") == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [(b'{"resourceType": "Patient", "id": ', "structure"), (b'{"resourceType": "Unicorn"}', "not-supported")],
)
def test_bad_body_gets_operation_outcome(client, body, code):
    response = client.post("/fhir/Patient" if b"Patient" in body else "/fhir/Unicorn", content=body, headers=FHIR_JSON)
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == code


def test_wrong_media_type_is_415(client):
    response = client.post("/fhir", content=b"<Bundle/>", headers={"Content-Type": "application/xml"})
    assert response.status_code == 415


def test_oversized_body_is_413(settings):
    small = settings.model_copy(update={"ingest_max_input_bytes": 2048})
    body = json.dumps({"resourceType": "Patient", "id": "big", "gender": "x" * 4000})
    with running_in_thread(create_app(small)) as base_url:
        response = httpx.post(f"{base_url}/fhir/Patient", content=body, headers=FHIR_JSON, timeout=60)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"
    assert count(settings, "raw.rejected") == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
resource_like = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Patient", "Observation", "Bundle", "Encounter", "Nope", ""])},
    optional={
        "id": st.text(max_size=70),
        "type": st.sampled_from(["transaction", "batch", "collection", "searchset", "bogus"]),
        "entry": st.lists(st.fixed_dictionaries({}, optional={"resource": json_values, "fullUrl": st.text()})),
        "status": json_values,
        "birthDate": st.text(max_size=12),
        "subject": json_values,
    },
)


@pytest.mark.slow
@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/fhir", "/fhir/Patient", "/fhir/Observation", "/fhir/Bundle", "/fhir/x"]),
    body=st.one_of(
        resource_like.map(lambda value: json.dumps(value).encode()),
        json_values.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=200),
    ),
)
def test_fuzzed_requests_never_get_500(client, path, body):
    response = client.post(path, content=body, headers=FHIR_JSON)
    assert response.status_code < 500, response.text
    assert response.json()["resourceType"] in {"OperationOutcome", "Bundle"}
