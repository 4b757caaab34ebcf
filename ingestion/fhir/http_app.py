"""The FHIR ingestion endpoint: ``POST /fhir`` (a Bundle) and ``POST /fhir/{type}`` (one resource).

Responses follow FHIR REST: a transaction-response or batch-response Bundle, or an OperationOutcome.
Statuses: 201 (new resource or version), 200 (unchanged, or a Bundle response), 400 (rejected input),
413 (over ``ingest_max_input_bytes``), 415 (not JSON), 503 (PostgreSQL or Kafka unavailable, retry later),
500 (unexpected; the body never carries the exception text, which may hold patient data).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import psycopg
from confluent_kafka import KafkaException
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from healthflow.settings import Settings
from ingestion.fhir.checking import Checked, check_submission
from ingestion.fhir.outcome import CODE_EXCEPTION, CODE_INVALID, CODE_NOT_SUPPORTED, Issue, operation_outcome
from ingestion.fhir.pipeline import BatchWriter, SubmissionResult
from ingestion.fhir.publisher import RawEventPublisher
from ingestion.fhir.sources import Submission, parse_json, too_large_issue
from ingestion.fhir.validation import model_class

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
ACCEPTED_MEDIA_TYPES = {FHIR_JSON, "application/json"}
SOURCE = "http"


def fhir_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def _error(status: int, code: str, problem: str) -> Response:
    return fhir_response(operation_outcome([Issue(code, "", problem)]), status)


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes, so an oversized body is detected without holding all of it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            break
    return b"".join(chunks)


def _precheck(data: bytes, *, path_type: str | None, max_bytes: int) -> list[Issue]:
    """Issues found before validation: size, and for ``/fhir/{type}`` a type that the URL or body contradicts."""
    if len(data) > max_bytes:
        return [too_large_issue(max_bytes)]
    if path_type is None:
        value, issues = parse_json(data)
        if not issues and not (isinstance(value, dict) and value.get("resourceType") == "Bundle"):
            return [Issue(CODE_INVALID, "resourceType", "POST /fhir takes a Bundle; post one resource to /fhir/{type}")]
        return []
    if model_class(path_type) is None or path_type == "Bundle":
        return [Issue(CODE_NOT_SUPPORTED, "", "the URL names no R4 resource type accepted here")]
    value, issues = parse_json(data)
    if issues:
        return []  # check_submission reports the JSON error itself
    if not isinstance(value, dict) or value.get("resourceType") != path_type:
        return [Issue(CODE_INVALID, "resourceType", "resourceType does not match the resource type in the URL")]
    return []


def _entry_response(result: SubmissionResult, position: int) -> dict[str, Any]:
    checked = result.checked
    for rejection, stored_rejection in zip(checked.rejections, result.rejections, strict=True):
        if rejection.entry_index == position:
            outcome = operation_outcome(rejection.issues)
            outcome["id"] = f"rejected-{stored_rejection.rejected_id}"
            return {"status": "400 Bad Request", "outcome": outcome}
    for candidate in checked.candidates:
        if candidate.entry_index == position:
            row = result.stored.get((candidate.resource_type, candidate.resource_id, candidate.content_hash))
            location = f"{candidate.resource_type}/{candidate.resource_id}"
            if row is None:
                return {"status": "200 OK", "location": location}
            return {"status": "201 Created", "location": f"{location}/_history/{row.version}"}
    if position in checked.skipped_entries:
        problem = "only entries with a resource are processed; read and delete requests are not supported"
        return {
            "status": "501 Not Implemented",
            "outcome": operation_outcome([Issue(CODE_NOT_SUPPORTED, "", problem)], severity="warning"),
        }
    return {"status": "200 OK"}


def build_response(result: SubmissionResult) -> Response:
    """Turn a stored submission into the FHIR response for the caller."""
    checked: Checked = result.checked
    if checked.bundle_type is None or (checked.rejections and checked.rejections[0].entry_index is None):
        return _single_response(result)
    response_type = "transaction-response" if checked.bundle_type == "transaction" else "batch-response"
    entries = [{"response": _entry_response(result, position)} for position in range(checked.entry_count)]
    return fhir_response({"resourceType": "Bundle", "type": response_type, "entry": entries}, 200)


def _single_response(result: SubmissionResult) -> Response:
    checked = result.checked
    if checked.rejections:
        rejection, stored_rejection = checked.rejections[0], result.rejections[0]
        outcome = operation_outcome(rejection.issues)
        outcome["id"] = f"rejected-{stored_rejection.rejected_id}"
        status = 413 if any(issue.code == "too-costly" for issue in rejection.issues) else 400
        return fhir_response(outcome, status)
    candidate = checked.candidates[0]
    row = result.stored.get((candidate.resource_type, candidate.resource_id, candidate.content_hash))
    location = f"{candidate.resource_type}/{candidate.resource_id}"
    if row is None:
        text = f"{location} unchanged: this content is already stored"
        return fhir_response(operation_outcome([Issue("informational", "", text)], severity="information"), 200)
    text = f"{location} stored as version {row.version}"
    body = operation_outcome([Issue("informational", "", text)], severity="information")
    return fhir_response(body, 201, headers={"Location": f"{location}/_history/{row.version}"})


def create_app(settings: Settings) -> Starlette:
    """Build the ASGI app; one Kafka producer is shared by all requests and flushed at shutdown."""
    state: dict[str, RawEventPublisher] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["publisher"] = RawEventPublisher(settings)
        logger.info("FHIR ingestion endpoint started")
        yield
        state.pop("publisher").close()
        logger.info("FHIR ingestion endpoint stopped")

    def ingest(submission: Submission) -> SubmissionResult:
        checked = check_submission(submission)
        writer = BatchWriter(settings, state["publisher"], source=SOURCE, source_ref=submission.source_ref)
        return writer.write([checked], finished=True)[0]

    async def handle(request: Request, path_type: str | None) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ACCEPTED_MEDIA_TYPES:
            return _error(415, CODE_NOT_SUPPORTED, f"Content-Type must be {FHIR_JSON}")
        request_id = uuid.uuid4().hex
        data = await _read_body(request, settings.ingest_max_input_bytes)
        issues = _precheck(data, path_type=path_type, max_bytes=settings.ingest_max_input_bytes)
        submission = Submission(f"http:request/{request_id}", data[: settings.ingest_max_input_bytes + 1], issues)
        try:
            result = await run_in_threadpool(ingest, submission)
        except (ConnectionError, psycopg.OperationalError, KafkaException) as error:
            logger.error("request %s not stored: %s", request_id, type(error).__name__)
            return _error(503, CODE_EXCEPTION, "storage or broker unavailable; nothing was stored, retry later")
        except Exception as error:  # noqa: BLE001 - the client gets a generic outcome, never the text
            logger.error("request %s failed: %s", request_id, type(error).__name__, exc_info=False)
            return _error(500, CODE_EXCEPTION, "an unexpected error occurred; the server log has the request id")
        response = build_response(result)
        response.headers["X-Request-ID"] = request_id
        return response

    async def post_bundle(request: Request) -> Response:
        return await handle(request, None)

    async def post_resource(request: Request) -> Response:
        return await handle(request, request.path_params["resource_type"])

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    routes = [
        Route("/fhir", post_bundle, methods=["POST"]),
        Route("/fhir/{resource_type}", post_resource, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run the endpoint with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)


@contextlib.contextmanager
def running_in_thread(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a background thread; yield its base URL, stop it on exit.

    ``port=0`` picks a free port. Used by the tests and the benchmark, which talk to a real server.
    """
    import threading
    import time

    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}")
        time.sleep(0.05)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
