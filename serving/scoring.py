"""Scoring, independent of the HTTP layer: entity resolution, features, probability, explanation, log.

A request names a patient by id (pseudonymised here with the platform key, then dropped) or by pseudonym,
and optionally a stay. The response carries the probability, the risk level and thresholds in force, the
top SHAP contributions, the model identity, the feature row with its lineage and freshness, and the time
scored (UTC).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from healthflow.errors import InvalidInputError, UnprocessableError
from healthflow.pseudonym import key_bytes, patient_pseudonym
from healthflow.settings import Settings
from serving.features import Entity, FeatureRow, FeatureSource
from serving.model_handle import ChampionModel, ModelHandle
from serving.prediction_log import PredictionLog, PredictionRecord
from serving.requests import ScoreRequest

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("healthflow.audit")


@dataclass(frozen=True)
class ScoredRow:
    row: FeatureRow
    probability: float
    margin: float
    contributions: np.ndarray
    expected_value: float


def audit_score(
    *, subject: str, pseudonyms: list[str], stay_ids: list[str], model_name: str, model_version: str
) -> None:
    """Write one structured audit event: who scored which pseudonyms with which model version."""
    audit_logger.info(
        "score",
        extra={
            "audit_event": "score",
            "subject": subject,
            "pseudonyms": pseudonyms,
            "stay_ids": stay_ids,
            "model_name": model_name,
            "model_version": model_version,
        },
    )


class Scorer:
    """Score entities with the current champion and log every score."""

    def __init__(
        self, settings: Settings, *, model: ModelHandle, features: FeatureSource, prediction_log: PredictionLog | None
    ) -> None:
        if settings.pseudonym_key is None:
            raise InvalidInputError("HEALTHFLOW_PSEUDONYM_KEY must be set to score by patient id")
        self.settings = settings
        self.model = model
        self.features = features
        self.prediction_log = prediction_log
        self._key = key_bytes(settings.pseudonym_key.get_secret_value())

    def resolve(self, request: ScoreRequest) -> Entity:
        """Return the entity for a request; the patient id is pseudonymised and not kept."""
        pseudonym = request.pseudonym or patient_pseudonym(self._key, request.patient_id or "")
        stay_id = request.stay_id or self.features.latest_stay(pseudonym)
        return Entity(pseudonym=pseudonym, stay_id=stay_id)

    def score(self, requests: list[ScoreRequest], *, subject: str) -> list[dict[str, Any]]:
        """Score the requests in one model pass; return one response body per request, in order."""
        if len(requests) > self.settings.serve_batch_max_patients:
            raise InvalidInputError(
                f"a batch may contain at most {self.settings.serve_batch_max_patients} patients "
                f"(HEALTHFLOW_SERVE_BATCH_MAX_PATIENTS); got {len(requests)}"
            )
        model = self.model.current
        entities = [self.resolve(request) for request in requests]
        rows = self.features.get_rows(entities)
        self._check_missing(rows, model)

        scored = self._predict(model, rows)
        scored_at = datetime.now(UTC)
        bodies = [self._body(model, item, scored_at) for item in scored]
        if self.prediction_log is not None:
            ids = self.prediction_log.write([self._record(model, item, scored_at, subject) for item in scored])
            for body, prediction_id in zip(bodies, ids, strict=True):
                body["prediction_id"] = prediction_id
        audit_score(
            subject=subject,
            pseudonyms=[entity.pseudonym for entity in entities],
            stay_ids=[entity.stay_id for entity in entities],
            model_name=model.identity.name,
            model_version=model.identity.version,
        )
        return bodies

    def _check_missing(self, rows: list[FeatureRow], model: ChampionModel) -> None:
        for row in rows:
            absent = [name for name in model.feature_names if name not in row.values]
            row.missing = sorted(set(row.missing) | set(absent))
            if row.missing and self.settings.serve_missing_features == "reject":
                raise UnprocessableError(
                    f"patient {row.entity.pseudonym} stay {row.entity.stay_id} lacks features {row.missing}; "
                    "this API rejects incomplete rows (HEALTHFLOW_SERVE_MISSING_FEATURES=reject)",
                    missing_features=row.missing,
                )

    @staticmethod
    def _predict(model: ChampionModel, rows: list[FeatureRow]) -> list[ScoredRow]:
        margins, contributions, expected_value = model.explain([row.values for row in rows])
        probabilities = model.calibrator.probability(margins)
        return [
            ScoredRow(
                row=row,
                probability=float(probabilities[i]),
                margin=float(margins[i]),
                contributions=contributions[i],
                expected_value=expected_value,
            )
            for i, row in enumerate(rows)
        ]

    def _body(self, model: ChampionModel, item: ScoredRow, scored_at: datetime) -> dict[str, Any]:
        names = model.feature_names
        order = np.argsort(-np.abs(item.contributions))[: self.settings.serve_top_features]
        features = {name: _plain(item.row.values.get(name)) for name in names}
        return {
            "pseudonym": item.row.entity.pseudonym,
            "stay_id": item.row.entity.stay_id,
            "probability": item.probability,
            "risk_level": model.thresholds.risk_level(item.probability),
            "thresholds": model.thresholds.as_dict(),
            "top_features": [
                {"feature": names[i], "value": features[names[i]], "shap_value": float(item.contributions[i])}
                for i in order
            ],
            "explanation": {
                "units": "log-odds (raw margin before calibration)",
                # TreeSHAP's own base value, so the contributions add up exactly. It equals the expected value stored
                # with the model version when training computed that one the same way.
                "expected_value": item.expected_value,
                "raw_margin": item.margin,
                "shap_values": {name: float(value) for name, value in zip(names, item.contributions, strict=True)},
            },
            "model": {
                "name": model.identity.name,
                "version": model.identity.version,
                "run_id": model.identity.run_id,
                "alias": model.identity.alias,
            },
            "features": features,
            "missing_features": item.row.missing,
            "lineage": item.row.lineage,
            "feature_freshness": item.row.freshness(scored_at),
            "scored_at": scored_at.isoformat(),
        }

    def _record(self, model: ChampionModel, item: ScoredRow, scored_at: datetime, subject: str) -> PredictionRecord:
        event_times = [value for value in item.row.event_times.values() if value is not None]
        return PredictionRecord(
            scored_at=scored_at,
            patient_pseudonym=item.row.entity.pseudonym,
            stay_id=item.row.entity.stay_id,
            feature_service=str(item.row.lineage.get("feature_service", "")),
            model_name=model.identity.name,
            model_version=model.identity.version,
            run_id=model.identity.run_id,
            probability=item.probability,
            risk_level=model.thresholds.risk_level(item.probability),
            features={name: _plain(item.row.values.get(name)) for name in model.feature_names},
            missing_features=item.row.missing,
            lineage=item.row.lineage,
            # NOTE: the feature row's event time is taken as the discharge time, because the feature views are
            # written at discharge. A view with another timestamp makes the discharge filter approximate.
            discharged_at=max(event_times) if event_times else None,
            request_subject=subject,
        )


def _plain(value: Any) -> Any:
    """Return a JSON-ready value: numpy scalars become Python numbers, NaN becomes None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
