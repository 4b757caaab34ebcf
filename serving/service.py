"""ScoreAPI: the BentoML service that scores patients with the champion model.

Start it with ``healthflow serve`` or ``bentoml serve serving.service:ScoreService``. The versioned routes
(``/v1/...``) live in a FastAPI app mounted on the service, so they appear in the service's OpenAPI page
(``/docs.json``, Swagger UI at ``/``). BentoML itself serves ``/healthz``, ``/livez``, ``/readyz`` (true
when the model is loaded and the feature store and prediction log are reachable) and ``/metrics``.

Every route but the health, metrics and documentation routes needs a bearer token (``serving.auth``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import bentoml
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from healthflow.errors import HealthFlowError, InvalidInputError, internal_problem
from healthflow.logs import configure_logging
from healthflow.pseudonym import key_bytes, patient_pseudonym
from healthflow.settings import get_settings
from serving.auth import AUDIT_READ, MODEL_READ, SCORE_READ, Principal, TokenError, TokenVerifier, bearer_token
from serving.features import Entity, FeastFeatureSource, FeatureRow
from serving.requests import BatchRequest, ScoreRequest

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PRINCIPAL_KEY = "healthflow.principal"
# Routes open without a token: liveness, readiness, Prometheus metrics and the OpenAPI page.
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/"})
PUBLIC_PREFIXES = ("/static_content/",)

scores_counter = bentoml.metrics.Counter(
    name="healthflow_scores",
    documentation="Scores returned, by model version and risk level.",
    labelnames=["model_version", "risk_level"],
)


def problem_response(error: HealthFlowError, instance: str) -> JSONResponse:
    headers = {}
    challenge = getattr(error, "www_authenticate", None)
    if challenge:
        headers["WWW-Authenticate"] = challenge
    return JSONResponse(error.to_problem(instance), status_code=error.status, headers=headers, media_type=PROBLEM_JSON)


class BearerAuthMiddleware:
    """Reject requests without a valid bearer token (401) on every non-public path; store the principal."""

    def __init__(self, app: Any, verifier: TokenVerifier | None = None) -> None:
        self.app = app
        self.verifier = verifier or TokenVerifier.from_settings(get_settings())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            scope[PRINCIPAL_KEY] = self.verifier.verify(bearer_token(authorization))
        except TokenError as error:
            logger.info("request to %s rejected: %s", scope["path"], error.message)
            await problem_response(error, scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _public(path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


api = FastAPI(
    title="HealthFlow ScoreAPI",
    version="1",
    description="30-day readmission risk scores with SHAP explanations. Bearer token (JWT) required.",
)


@api.exception_handler(HealthFlowError)
async def _domain_error(request: Request, error: HealthFlowError) -> JSONResponse:
    return problem_response(error, request.url.path)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    # Only locations and messages: pydantic's "input" would echo the request body, patient id included.
    problems = [f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()]
    return problem_response(InvalidInputError("invalid request: " + "; ".join(problems)), request.url.path)


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("unexpected %s on %s", type(error).__name__, request.url.path, exc_info=error)
    return JSONResponse(internal_problem(request.url.path), status_code=500, media_type=PROBLEM_JSON)


def principal_of(request: Request, scope_name: str) -> Principal:
    """Return the request's verified principal after checking that it grants ``scope_name``."""
    principal = request.scope.get(PRINCIPAL_KEY)
    if principal is None:
        # Reached only when the app runs without the middleware (for example under a test client).
        settings = get_settings()
        principal = TokenVerifier.from_settings(settings).verify(bearer_token(request.headers.get("authorization")))
    principal.require(scope_name)
    return principal


class FastJSONResponse(Response):
    """JSON rendered by orjson, returned as is so FastAPI does not validate and re-encode large score bodies."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


# Per-request access logs cost more than the model at hundreds of requests per second; /metrics counts
# requests instead, and the audit log records every score. No trace exporter is configured, yet BentoML's
# OpenTelemetry middleware made a span per request for about a sixth of the request CPU, so every path is
# excluded from tracing. The worker count is read when this module is imported, because BentoML takes it
# from the decorator.
@bentoml.service(
    name="healthflow-score",
    traffic={"timeout": 30},
    workers=get_settings().serve_workers,
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/"]},
)
@bentoml.asgi_app(api, path="/v1")
class ScoreService:
    """Load the champion, open the feature store and the prediction log, and score requests."""

    def __init__(self) -> None:
        from serving.model_handle import ModelHandle
        from serving.prediction_log import PredictionLog
        from serving.scoring import Scorer

        settings = get_settings()
        configure_logging(level=settings.log_level, log_format=settings.log_format)
        self.settings = settings
        self.verifier = TokenVerifier.from_settings(settings)
        model_name = settings.serve_model_name or settings.serve_feature_service
        self.model = ModelHandle(
            tracking_uri=settings.mlflow_tracking_uri,
            name=model_name,
            alias=settings.serve_model_alias,
            poll_seconds=settings.serve_model_poll_seconds,
        )
        self.model.start()
        self._features: FeastFeatureSource | None = None
        self.prediction_log = PredictionLog(settings, publish_to_kafka=settings.serve_kafka_log)
        self.scorer = Scorer(settings, model=self.model, features=self, prediction_log=self.prediction_log)
        self._key = key_bytes(settings.pseudonym_key.get_secret_value()) if settings.pseudonym_key else b""
        try:
            self.features.check()
        except HealthFlowError as error:
            # Not fatal: /readyz reports it, and the feature source is opened again on the next request.
            logger.warning("feature store not usable yet: %s", error.message)
        # The imports, the model and the feature store leave many long-lived objects. Frozen, they are left out
        # of the garbage collector's full passes: the slowest of 6,000 scores at 200 requests/s fell from 365 ms
        # to 86 ms in one benchmark run each (2 cores).
        gc.freeze()
        logger.info("ScoreAPI started for model %s@%s", model_name, settings.serve_model_alias)

    @property
    def features(self) -> FeastFeatureSource:
        """Return the online feature source, opened on first use so that a missing repository does not stop start-up."""
        if self._features is None:
            from ingestion.featurizer.feast_repo import feast_environment, repo_dir

            settings = self.settings
            self._features = FeastFeatureSource(
                repo_dir(settings), settings.serve_feature_service, environment=feast_environment(settings)
            )
        return self._features

    # The service is the scorer's feature source, so the Feast repository can open after start-up.
    def get_rows(self, entities: Sequence[Entity]) -> list[FeatureRow]:
        return self.features.get_rows(entities)

    def latest_stay(self, pseudonym: str) -> str:
        return self.features.latest_stay(pseudonym)

    def check(self) -> None:
        self.features.check()

    async def __is_ready__(self) -> bool:
        if not self.model.loaded:
            return False
        try:
            self.features.check()
            self.prediction_log.check()
        except HealthFlowError as error:
            logger.warning("not ready: %s", error.message)
            return False
        return True

    def __del__(self) -> None:
        model = getattr(self, "model", None)
        if model is not None:
            model.stop()

    @api.post("/score", summary="Score one patient stay", tags=["scores"], response_class=FastJSONResponse)
    def score(self, request: Request, body: ScoreRequest) -> FastJSONResponse:
        """Return the risk score, risk level, thresholds, top SHAP contributions, model and feature lineage."""
        principal = principal_of(request, SCORE_READ)
        result = self.scorer.score([body], subject=principal.subject)[0]
        scores_counter.labels(model_version=result["model"]["version"], risk_level=result["risk_level"]).inc()
        return FastJSONResponse(result)

    @api.post("/score/batch", summary="Score several patient stays", tags=["scores"], response_class=FastJSONResponse)
    def score_batch(self, request: Request, body: BatchRequest) -> FastJSONResponse:
        """Score up to ``serve_batch_max_patients`` patients in one model pass; results keep request order."""
        principal = principal_of(request, SCORE_READ)
        results = self.scorer.score(body.items, subject=principal.subject)
        for result in results:
            scores_counter.labels(model_version=result["model"]["version"], risk_level=result["risk_level"]).inc()
        return FastJSONResponse({"count": len(results), "results": results})

    @api.get("/scores", summary="Score history", tags=["scores"])
    def scores(
        self,
        request: Request,
        patient_id: Annotated[
            str | None, Query(max_length=200, description="Hospital patient id; pseudonymised, never stored.")
        ] = None,
        pseudonym: Annotated[str | None, Query(max_length=64)] = None,
        discharged_from: Annotated[
            datetime | None, Query(description="Earliest discharge time (ISO 8601, UTC).")
        ] = None,
        discharged_to: Annotated[datetime | None, Query(description="Latest discharge time (ISO 8601, UTC).")] = None,
        risk_level: Annotated[str | None, Query(pattern="^(low|medium|high)$")] = None,
        model_version: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int, Query(ge=1)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Return logged scores newest first, filtered and paginated; needs scope audit:read."""
        principal_of(request, AUDIT_READ)
        if patient_id is not None and pseudonym is not None:
            raise InvalidInputError("give at most one of patient_id or pseudonym")
        if limit > self.settings.serve_page_size_max:
            raise InvalidInputError(
                f"limit must be at most {self.settings.serve_page_size_max} (HEALTHFLOW_SERVE_PAGE_SIZE_MAX)"
            )
        if patient_id is not None:
            pseudonym = patient_pseudonym(self._key, patient_id)
        rows, total = self.prediction_log.history(
            pseudonym=pseudonym,
            discharged_from=discharged_from,
            discharged_to=discharged_to,
            risk_level=risk_level,
            model_version=model_version,
            limit=limit,
            offset=offset,
        )
        return {"total": total, "limit": limit, "offset": offset, "items": rows}

    @api.get("/model", summary="The served champion", tags=["model"])
    def model_info(self, request: Request) -> dict[str, Any]:
        """Return the champion's name, version, run id, metrics and thresholds; needs scope model:read."""
        principal_of(request, MODEL_READ)
        return self.model.current.describe()


ScoreService.add_asgi_middleware(BearerAuthMiddleware)  # type: ignore[attr-defined]
