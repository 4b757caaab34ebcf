"""Scoring logic without services: a small CatBoost model in memory and an in-memory feature source."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from healthflow.errors import InvalidInputError, NotFoundError, ServiceUnavailableError, UnprocessableError
from healthflow.pseudonym import key_bytes, patient_pseudonym
from healthflow.settings import Settings
from serving.features import Entity, FeatureRow
from serving.model_handle import ChampionModel, ModelHandle, ModelIdentity
from serving.requests import BatchRequest, ScoreRequest
from serving.scoring import Scorer
from training.calibration import Calibrator
from training.model import FeatureTypes
from training.thresholds import RiskThresholds

TYPES = FeatureTypes(numeric=("prior_stays", "length_of_stay_days"), categorical=("admission_type",))


class MemoryFeatureSource:
    """Feature rows from a dict keyed by (pseudonym, stay); the latest stay is the last one added."""

    def __init__(self, rows: dict[tuple[str, str], dict]) -> None:
        self.rows = rows

    def get_rows(self, entities):
        result = []
        for entity in entities:
            values = self.rows.get((entity.pseudonym, entity.stay_id))
            if values is None:
                raise NotFoundError(f"no online features for patient {entity.pseudonym} stay {entity.stay_id}")
            missing = [name for name, value in values.items() if value is None]
            result.append(
                FeatureRow(
                    entity=entity,
                    values=dict(values),
                    missing=missing,
                    event_times={"view": datetime(2026, 3, 1, tzinfo=UTC)},
                    lineage={"feature_service": "memory"},
                )
            )
        return result

    def latest_stay(self, pseudonym):
        stays = [stay for (owner, stay) in self.rows if owner == pseudonym]
        if not stays:
            raise NotFoundError(f"patient {pseudonym} has no stay")
        return stays[-1]

    def check(self):
        return None


@pytest.fixture(scope="module")
def champion() -> ChampionModel:
    from catboost import CatBoostClassifier

    rng = np.random.default_rng(0)
    prior = rng.poisson(1.0, 400).astype(float)
    stay = rng.gamma(2.0, 2.0, 400)
    kind = rng.choice(["emergency", "elective"], 400)
    label = (rng.random(400) < 1 / (1 + np.exp(-(prior - 1.5 + (kind == "emergency"))))).astype(int)
    data = [[p, s, k] for p, s, k in zip(prior, stay, kind, strict=True)]
    booster = CatBoostClassifier(iterations=30, depth=3, verbose=False, allow_writing_files=False, random_seed=1)
    booster.fit(data, label, cat_features=[2])
    return ChampionModel(
        identity=ModelIdentity(name="unit", version="3", run_id="run-1", alias="champion"),
        booster=booster,
        types=TYPES,
        calibrator=Calibrator("platt", slope=0.9, intercept=0.1),
        thresholds=RiskThresholds(operating_point=0.3, medium=0.3, high=0.6, rule="unit test values"),
        expected_value=0.0,
    )


def _scorer(champion, rows, **overrides) -> Scorer:
    handle = ModelHandle(tracking_uri="http://127.0.0.1:1", name="unit", alias="champion", poll_seconds=60)
    handle.swap(champion)
    return Scorer(Settings(**overrides), model=handle, features=MemoryFeatureSource(rows), prediction_log=None)


PSEUDONYM = "a" * 32
ROWS = {
    (PSEUDONYM, "s1"): {"prior_stays": 0.0, "length_of_stay_days": 2.0, "admission_type": "elective"},
    (PSEUDONYM, "s2"): {"prior_stays": 4.0, "length_of_stay_days": 9.0, "admission_type": "emergency"},
    ("b" * 32, "s9"): {"prior_stays": 1.0, "length_of_stay_days": None, "admission_type": "emergency"},
}


def test_shap_values_sum_to_raw_margin(champion):
    body = _scorer(champion, ROWS).score([ScoreRequest(pseudonym=PSEUDONYM, stay_id="s2")], subject="t")[0]
    explanation = body["explanation"]
    raw = champion.raw_margin([ROWS[(PSEUDONYM, "s2")]])[0]
    assert sum(explanation["shap_values"].values()) + explanation["expected_value"] == pytest.approx(raw, abs=1e-9)
    assert body["probability"] == pytest.approx(float(champion.calibrator.probability(np.array([raw]))[0]))


def test_top_features_ordered_by_absolute_contribution(champion):
    body = _scorer(champion, ROWS, serve_top_features=2).score(
        [ScoreRequest(pseudonym=PSEUDONYM, stay_id="s2")], subject="t"
    )[0]
    magnitudes = [abs(item["shap_value"]) for item in body["top_features"]]
    assert len(magnitudes) == 2
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert max(abs(value) for value in body["explanation"]["shap_values"].values()) == magnitudes[0]


def test_risk_level_follows_thresholds(champion):
    body = _scorer(champion, ROWS).score([ScoreRequest(pseudonym=PSEUDONYM, stay_id="s1")], subject="t")[0]
    assert body["risk_level"] == champion.thresholds.risk_level(body["probability"])
    assert body["thresholds"]["high"] == 0.6


def test_latest_stay_used_without_stay_id(champion):
    body = _scorer(champion, ROWS).score([ScoreRequest(pseudonym=PSEUDONYM)], subject="t")[0]
    assert body["stay_id"] == "s2"


def test_patient_id_is_pseudonymised(champion):
    settings = Settings()
    pseudonym = patient_pseudonym(key_bytes(settings.pseudonym_key.get_secret_value()), "MRN-1")
    rows = {(pseudonym, "s1"): ROWS[(PSEUDONYM, "s1")]}
    body = _scorer(champion, rows).score([ScoreRequest(patient_id="MRN-1", stay_id="s1")], subject="t")[0]
    assert body["pseudonym"] == pseudonym
    assert "MRN-1" not in str(body)


def test_missing_feature_flagged_by_default(champion):
    body = _scorer(champion, ROWS).score([ScoreRequest(pseudonym="b" * 32, stay_id="s9")], subject="t")[0]
    assert body["missing_features"] == ["length_of_stay_days"]
    assert body["features"]["length_of_stay_days"] is None


def test_missing_feature_rejected_when_configured(champion):
    scorer = _scorer(champion, ROWS, serve_missing_features="reject")
    with pytest.raises(UnprocessableError) as caught:
        scorer.score([ScoreRequest(pseudonym="b" * 32, stay_id="s9")], subject="t")
    assert caught.value.status == 422
    assert caught.value.details["missing_features"] == ["length_of_stay_days"]


def test_unknown_patient_raises_not_found(champion):
    with pytest.raises(NotFoundError):
        _scorer(champion, ROWS).score([ScoreRequest(pseudonym="c" * 32, stay_id="s1")], subject="t")


def test_batch_over_limit_rejected(champion):
    requests = [ScoreRequest(pseudonym=PSEUDONYM, stay_id="s1")] * 3
    with pytest.raises(InvalidInputError, match="at most 2"):
        _scorer(champion, ROWS, serve_batch_max_patients=2).score(requests, subject="t")


def test_batch_keeps_request_order(champion):
    requests = [ScoreRequest(pseudonym=PSEUDONYM, stay_id=stay) for stay in ("s2", "s1", "s2")]
    bodies = _scorer(champion, ROWS).score(requests, subject="t")
    assert [body["stay_id"] for body in bodies] == ["s2", "s1", "s2"]


@pytest.mark.parametrize(
    "fields",
    [{}, {"patient_id": "x", "pseudonym": "a" * 32}, {"pseudonym": "not-hex"}, {"pseudonym": "a" * 31}],
)
def test_request_needs_exactly_one_valid_reference(fields):
    with pytest.raises(ValidationError):
        ScoreRequest(**fields)


def test_empty_batch_rejected():
    with pytest.raises(ValidationError):
        BatchRequest(items=[])


def test_handle_without_model_raises_503():
    handle = ModelHandle(tracking_uri="http://127.0.0.1:1", name="unit", alias="champion", poll_seconds=60)
    with pytest.raises(ServiceUnavailableError) as caught:
        _ = handle.current
    assert caught.value.status == 503


def test_freshness_reports_age_in_seconds():
    row = FeatureRow(
        entity=Entity("a" * 32, "s"),
        values={},
        missing=[],
        event_times={"view": datetime(2026, 1, 1, tzinfo=UTC), "empty": None},
    )
    freshness = row.freshness(datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    assert freshness["view"]["age_seconds"] == 60.0
    assert freshness["empty"]["age_seconds"] is None


def test_service_definition_import_stays_light() -> None:
    # BentoML's supervisor process imports the service module only for its configuration. The scoring stack
    # (numpy, pandas, pyarrow, CatBoost) belongs in the workers, where ScoreService.__init__ imports it.
    code = "import sys, serving.service; print(sorted({m.split('.')[0] for m in sys.modules}))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    loaded = set(ast.literal_eval(completed.stdout.strip()))
    assert not loaded & {"pandas", "pyarrow", "catboost", "numpy", "feast", "mlflow"}
