"""The served model: ``models:/NAME@ALIAS`` from the MLflow registry, reloaded when the alias moves.

``ChampionModel`` is one loaded version: the CatBoost model, its feature types, the calibrator (raw margin
to probability), the risk thresholds and the SHAP expected value stored with the version. SHAP values are
CatBoost's exact TreeSHAP values (``ShapValues``) in raw-margin (log-odds) units, so for every row the
contributions plus the expected value equal the model's raw margin before calibration. When the version is
loaded, ``serving.leaf_shap`` builds a table of them per tree leaf (``training.tree_shap``) and checks it
against CatBoost on probe rows. A request then costs one ``calc_leaf_indexes`` call and a table lookup.
Models the table does not support, and tables that disagree, are explained with CatBoost's ``ShapValues``
per request, as logged.

``ModelHandle`` keeps the current ``ChampionModel`` and swaps it atomically; a background thread polls the
alias every ``serve_model_poll_seconds`` and loads the new version before swapping, so requests in flight
keep the version they started with and a failed load leaves the old version serving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healthflow.errors import ServiceUnavailableError
from serving.leaf_shap import checked_shap_table
from training.calibration import Calibrator
from training.model import MISSING_CATEGORY, FeatureTypes
from training.thresholds import RiskThresholds
from training.tree_shap import LeafShapTable

logger = logging.getLogger(__name__)

# Attribute names looked up on the unwrapped pyfunc PythonModel, in order of preference.
_MODEL_ATTRIBUTES = ("catboost_model", "model", "booster")


@dataclass(frozen=True)
class ModelIdentity:
    """Identity of the served registry version: name, version, run id and the alias it was loaded through."""

    name: str
    version: str
    run_id: str
    alias: str


@dataclass
class ChampionModel:
    """One loaded model version and everything needed to score and explain it."""

    identity: ModelIdentity
    booster: Any
    types: FeatureTypes
    calibrator: Calibrator
    thresholds: RiskThresholds
    expected_value: float
    metrics: dict[str, float] = field(default_factory=dict)
    # None when requests are explained with CatBoost's ShapValues; see serving.leaf_shap.
    shap_table: LeafShapTable | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        # Built here, once per loaded version, so that requests only look leaves up.
        label = f"{self.identity.name} version {self.identity.version}"
        self.shap_table = checked_shap_table(self.booster, self.types, self.pool, label)

    @property
    def feature_names(self) -> list[str]:
        return self.types.names

    def pool(self, rows: list[dict[str, Any]]) -> Any:
        """Return a CatBoost Pool of the rows in feature order: numeric as float (missing is NaN), categorical as str.

        Built from plain lists rather than a DataFrame, because per-request pandas overhead was several times
        the model's own time for one row.
        """
        from catboost import Pool

        numeric, categorical = self.types.numeric, self.types.categorical
        data = [
            [_as_float(row.get(name)) for name in numeric] + [_as_category(row.get(name)) for name in categorical]
            for row in rows
        ]
        cat_indices = list(range(len(numeric), len(numeric) + len(categorical)))
        return Pool(data, cat_features=cat_indices, feature_names=self.types.names)

    def raw_margin(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Return the raw log-odds of each row, before calibration."""
        return np.asarray(self.booster.predict(self.pool(rows), prediction_type="RawFormulaVal"), dtype="float64")

    def predict_proba(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Return the calibrated probability of readmission within 30 days for each row."""
        return np.asarray(self.calibrator.probability(self.raw_margin(rows)), dtype="float64")

    def explain(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, float]:
        """Return (raw margins, SHAP values n x features in log-odds, expected value) in one model pass."""
        pool = self.pool(rows)
        if self.shap_table is not None:
            # One CatBoost thread: requests contain one row or a small batch, and run side by side.
            return self.shap_table.explain(self.booster.calc_leaf_indexes(pool, thread_count=1))

        # NOTE: CatBoost 1.2.10's ShapValues for Depthwise and Lossguide models do not add up to the raw margin
        # (off by up to about 1 in log-odds on synthetic data), so margins from this branch are wrong for them.
        values = np.asarray(self.booster.get_feature_importance(pool, type="ShapValues"), dtype="float64")
        contributions, base = values[:, :-1], values[:, -1]
        margins = contributions.sum(axis=1) + base
        return margins, contributions, float(base[0])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.identity.name,
            "version": self.identity.version,
            "run_id": self.identity.run_id,
            "alias": self.identity.alias,
            "features": self.types.as_dict(),
            "thresholds": self.thresholds.as_dict(),
            "calibration": self.calibrator.method,
            "expected_value": self.expected_value,
            "metrics": self.metrics,
        }


def _as_float(value: Any) -> float:
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _as_category(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return MISSING_CATEGORY
    return str(value)


def load_champion(tracking_uri: str, name: str, alias: str) -> ChampionModel:
    """Load ``models:/name@alias``; raise ServiceUnavailableError naming the model when it cannot be used."""
    from mlflow.exceptions import MlflowException

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        raise ServiceUnavailableError(
            f"model {name}@{alias} is not in the MLflow registry at {tracking_uri}; train and promote a model first"
        ) from error

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    python_model = pyfunc.unwrap_python_model()
    identity = ModelIdentity(name=name, version=str(version.version), run_id=version.run_id or "", alias=alias)
    metrics = _run_metrics(client, version.run_id)
    return _assemble(identity, python_model, dict(version.tags or {}), metrics)


def _run_metrics(client: Any, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.metrics)
    except Exception as error:  # noqa: BLE001
        # Metrics are descriptive only: a missing run must not stop the model from serving.
        logger.warning("cannot read metrics of run %s: %s", run_id, type(error).__name__)
        return {}


def _assemble(
    identity: ModelIdentity, python_model: Any, tags: dict[str, str], metrics: dict[str, float]
) -> ChampionModel:
    """Build a ChampionModel from the unwrapped pyfunc model and the version's tags.

    Reads ``training.pyfunc.ReadmissionModel``: the CatBoost model in ``model``, ``types``, ``calibrator`` and
    the ``meta`` dict (``thresholds``, ``shap_expected_value``). Objects that carry ``thresholds`` and
    ``expected_value`` as attributes (the benchmark's mechanics model) are read the same way.
    """
    meta = getattr(python_model, "meta", None) or {}
    booster = next((getattr(python_model, name) for name in _MODEL_ATTRIBUTES if hasattr(python_model, name)), None)
    if booster is None:
        raise ServiceUnavailableError(
            f"model {identity.name} version {identity.version} contains no CatBoost model "
            f"(looked for attributes {', '.join(_MODEL_ATTRIBUTES)})"
        )

    types = getattr(python_model, "types", None)
    if types is None and "numeric_features" in meta:
        types = FeatureTypes(numeric=tuple(meta["numeric_features"]), categorical=tuple(meta["categorical_features"]))
    if types is None:
        raise ServiceUnavailableError(f"model {identity.name} version {identity.version} contains no feature types")

    calibrator = getattr(python_model, "calibrator", None) or meta.get("calibrator") or {"method": "none"}
    if isinstance(calibrator, dict):
        calibrator = Calibrator.from_dict(calibrator)

    thresholds = getattr(python_model, "thresholds", None) or meta.get("thresholds")
    if isinstance(thresholds, dict):
        thresholds = RiskThresholds(**thresholds)
    if thresholds is None:
        raise ServiceUnavailableError(f"model {identity.name} version {identity.version} contains no risk thresholds")

    expected_value = getattr(python_model, "expected_value", None)
    if expected_value is None:
        expected_value = meta.get("shap_expected_value", tags.get("shap_expected_value") or None)
    # Test metrics are version tags (test_auroc, ...); run metrics cover validation and the rest.
    for key, value in tags.items():
        if key.startswith("test_"):
            try:
                metrics[key] = float(value)
            except ValueError:
                continue
    return ChampionModel(
        identity=identity,
        booster=booster,
        types=types,
        calibrator=calibrator,
        thresholds=thresholds,
        expected_value=float(expected_value) if expected_value is not None else float("nan"),
        metrics=metrics,
    )


class ModelHandle:
    """The current champion, swapped atomically when the registry alias moves to another version."""

    def __init__(self, *, tracking_uri: str, name: str, alias: str, poll_seconds: float) -> None:
        self.tracking_uri = tracking_uri
        self.name = name
        self.alias = alias
        self.poll_seconds = poll_seconds
        self._current: ChampionModel | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @property
    def current(self) -> ChampionModel:
        """Return the loaded model; raise ServiceUnavailableError (503) when none is loaded yet."""
        model = self._current
        if model is None:
            raise ServiceUnavailableError(
                f"no version of model {self.name}@{self.alias} is loaded yet; the service retries every "
                f"{self.poll_seconds:g} s",
                model_name=self.name,
            )
        return model

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def refresh(self) -> bool:
        """Load the alias's version when it differs from the served one; return True when it swapped."""
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        version = str(client.get_model_version_by_alias(self.name, self.alias).version)
        if self._current is not None and self._current.identity.version == version:
            return False
        self.swap(load_champion(self.tracking_uri, self.name, self.alias))
        return True

    def swap(self, model: ChampionModel) -> None:
        """Serve ``model`` from now on; requests already running keep the model they started with."""
        previous = self._current.identity.version if self._current else None
        self._current = model
        logger.info("serving model %s version %s (was %s)", model.identity.name, model.identity.version, previous)

    def try_refresh(self) -> None:
        """Refresh and log any failure; the served version stays unchanged on error."""
        try:
            self.refresh()
            self.last_error = None
        except Exception as error:  # noqa: BLE001
            # Registry outages, a half-registered version or a bad artifact must never stop serving.
            self.last_error = type(error).__name__
            logger.warning(
                "cannot refresh model %s@%s (%s: %s); keeping version %s",
                self.name,
                self.alias,
                type(error).__name__,
                error,
                self._current.identity.version if self._current else None,
            )

    def start(self) -> None:
        """Load the champion now (failure is logged) and poll the alias in a daemon thread."""
        self.try_refresh()
        self._thread = threading.Thread(target=self._poll, name="champion-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            started = time.monotonic()
            self.try_refresh()
            logger.debug("alias check took %.3f s", time.monotonic() - started)
