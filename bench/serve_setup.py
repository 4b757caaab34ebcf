"""Set-up for ScoreAPI tests and benchmarks: a mechanics-only model and a small Feast repository.

Everything here exists to exercise the serving mechanics against real services (MLflow registry, Feast with
a PostgreSQL online store, PostgreSQL, Kafka). The model is a CatBoost classifier fitted on a synthetic
frame generated below, so its scores mean nothing clinically. When the project's own feature repository
and trained champion exist, serve those instead.
"""

from __future__ import annotations

import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from healthflow.settings import Settings

NUMERIC = ("age", "length_of_stay_days", "prior_inpatient_12m", "charlson_index", "hemoglobin")
CATEGORICAL = ("sex", "admission_type")
VIEW = "serve_test_stay_features"
TABLE = "serve_test_stays"


def synthetic_frame(rows: int, *, seed: int) -> pd.DataFrame:
    """Return a synthetic stay table: pseudonym, stay_id, discharge time (UTC), features and a label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "patient_pseudonym": [f"{index:032x}" for index in rng.choice(10**9, rows, replace=False)],
            "stay_id": [f"stay-{index}" for index in range(rows)],
            "discharged_at": [
                datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=int(h)) for h in rng.integers(0, 8000, rows)
            ],
            "age": rng.integers(18, 95, rows).astype("float64"),
            "length_of_stay_days": rng.gamma(2.0, 2.5, rows).round(1),
            "prior_inpatient_12m": rng.poisson(0.8, rows).astype("float64"),
            "charlson_index": rng.poisson(2.0, rows).astype("float64"),
            "hemoglobin": rng.normal(12.5, 2.0, rows).round(1),
            "sex": rng.choice(["female", "male"], rows),
            "admission_type": rng.choice(["emergency", "elective", "urgent"], rows),
        }
    )
    margin = (
        -2.5
        + 0.6 * frame["prior_inpatient_12m"]
        + 0.2 * frame["charlson_index"]
        + 0.05 * frame["length_of_stay_days"]
        - 0.1 * (frame["hemoglobin"] - 12.5)
        + 0.4 * (frame["admission_type"] == "emergency")
    )
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-margin))).astype(int)
    return frame


class MechanicsModel(mlflow.pyfunc.PythonModel):
    """A pyfunc wrapper exposing the attributes ``serving.model_handle`` reads (test and bench model only)."""

    def __init__(
        self, catboost_model: Any, types: Any, calibrator: Any, thresholds: Any, expected_value: float
    ) -> None:
        self.catboost_model = catboost_model
        self.types = types
        self.calibrator = calibrator
        self.thresholds = thresholds
        self.expected_value = expected_value

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        from catboost import Pool

        from training.model import prepare_features

        pool = Pool(prepare_features(model_input, self.types), cat_features=list(self.types.categorical))
        return self.calibrator.probability(self.catboost_model.predict(pool, prediction_type="RawFormulaVal"))


def register_mechanics_model(
    settings: Settings, name: str, frame: pd.DataFrame, *, iterations: int = 100, seed: int = 7
) -> str:
    """Fit a small CatBoost model on ``frame``, register it as ``name`` and alias it ``champion``.

    Returns the new version number.
    """
    import cloudpickle
    from catboost import CatBoostClassifier, Pool

    from training.calibration import Calibrator
    from training.model import FeatureTypes, prepare_features
    from training.thresholds import RiskThresholds

    types = FeatureTypes(numeric=NUMERIC, categorical=CATEGORICAL)
    features = prepare_features(frame, types)
    model = CatBoostClassifier(
        iterations=iterations, depth=4, random_seed=seed, verbose=False, allow_writing_files=False
    )
    model.fit(Pool(features, label=frame["label"], cat_features=list(CATEGORICAL)))
    shap = model.get_feature_importance(Pool(features.head(1), cat_features=list(CATEGORICAL)), type="ShapValues")
    thresholds = RiskThresholds(
        operating_point=0.15, medium=0.15, high=0.35, rule="fixed values for the mechanics model"
    )
    wrapper = MechanicsModel(model, types, Calibrator("none"), thresholds, float(shap[0, -1]))

    # The server process cannot import this module by name, so the class travels inside the pickle.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    with mlflow.start_run(run_name=f"{name}-mechanics") as run:
        mlflow.log_metric("validation_auroc", 0.5 + 0.01 * iterations / 10)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=wrapper,
            registered_model_name=name,
            pip_requirements=["catboost", "pandas", "mlflow"],
        )
    client = mlflow.MlflowClient()
    version = max(
        client.search_model_versions(f"name='{name}' and run_id='{run.info.run_id}'"), key=lambda v: int(v.version)
    )
    client.set_registered_model_alias(name, "champion", version.version)
    return str(version.version)


def write_feature_repo(settings: Settings, repo: Path, frame: pd.DataFrame, *, feature_service: str) -> None:
    """Write a Feast repo over a PostgreSQL table of ``frame``, apply it and materialise every row online."""
    from feast import FeatureStore

    _write_source_table(settings, frame)
    repo.mkdir(parents=True, exist_ok=True)
    password = settings.pg_password.get_secret_value() if settings.pg_password else ""
    postgres = {
        "host": settings.pg_host,
        "port": settings.pg_port,
        "user": settings.pg_user,
        "password": password,
        "sslmode": "disable",
    }
    (repo / "feature_store.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: serve_mechanics
            provider: local
            registry:
              registry_type: sql
              path: {settings.sqlalchemy_url(settings.pg_feast_database)}
              cache_ttl_seconds: 60
            online_store:
              type: postgres
              database: {settings.pg_feast_database}
              conn_type: pool
              min_conn: 1
              max_conn: 4
            offline_store:
              type: postgres
              database: {settings.pg_database}
            entity_key_serialization_version: 3
            """
        )
    )
    text = (repo / "feature_store.yaml").read_text()
    for section in ("online_store:", "offline_store:"):
        block = "".join(f"  {key}: {value}\n" for key, value in postgres.items())
        text = text.replace(section + "\n", section + "\n" + block, 1)
    (repo / "feature_store.yaml").write_text(text)
    (repo / "definitions.py").write_text(_DEFINITIONS.format(view=VIEW, table=TABLE, service=feature_service))

    store = FeatureStore(repo_path=str(repo))
    definitions = _load_definitions(repo / "definitions.py")
    store.apply(definitions)
    online = frame[["patient_pseudonym", "stay_id", "discharged_at", *NUMERIC, *CATEGORICAL]]
    store.write_to_online_store(VIEW, online)
    _close_online_store(store)


def _close_online_store(store: Any) -> None:
    # Feast 0.67 keeps the online store's connection (or pool) and the SQL registry's engines open for the
    # process's life and has no public close. Closing them here avoids unclosed-connection warnings in tests.
    online_store = store._get_provider().online_store
    for name in ("_conn", "_conn_pool"):
        resource = getattr(online_store, name, None)
        if resource is not None:
            resource.close()
            setattr(online_store, name, None)
    engines = [getattr(store.registry, name, None) for name in ("write_engine", "read_engine")]
    for engine in {id(engine): engine for engine in engines if engine is not None}.values():
        engine.dispose()


def _load_definitions(path: Path) -> list[Any]:
    import runpy

    namespace = runpy.run_path(str(path))
    return [namespace[name] for name in ("patient", "stay", "stays", "stay_view", "service")]


def _write_source_table(settings: Settings, frame: pd.DataFrame) -> None:
    from healthflow.db import transaction

    columns = ["patient_pseudonym", "stay_id", "discharged_at", *NUMERIC, *CATEGORICAL]
    with transaction(settings) as connection:
        connection.execute(f"DROP TABLE IF EXISTS features.{TABLE}")
        connection.execute(
            f"CREATE TABLE features.{TABLE} (patient_pseudonym text, stay_id text, discharged_at timestamptz, "
            + ", ".join(f"{name} double precision" for name in NUMERIC)
            + ", "
            + ", ".join(f"{name} text" for name in CATEGORICAL)
            + ")"
        )
        with connection.cursor().copy(f"COPY features.{TABLE} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in frame[columns].itertuples(index=False):
                copy.write_row(tuple(value.item() if hasattr(value, "item") else value for value in row))


_DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Float64, String

patient = Entity(name="patient", join_keys=["patient_pseudonym"], value_type=ValueType.STRING)
stay = Entity(name="stay", join_keys=["stay_id"], value_type=ValueType.STRING)
stays = PostgreSQLSource(name="{table}", query="SELECT * FROM features.{table}", timestamp_field="discharged_at")
stay_view = FeatureView(
    name="{view}",
    entities=[patient, stay],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="age", dtype=Float64),
        Field(name="length_of_stay_days", dtype=Float64),
        Field(name="prior_inpatient_12m", dtype=Float64),
        Field(name="charlson_index", dtype=Float64),
        Field(name="hemoglobin", dtype=Float64),
        Field(name="sex", dtype=String),
        Field(name="admission_type", dtype=String),
    ],
    source=stays,
    online=True,
)
service = FeatureService(name="{service}", features=[stay_view])
"""
