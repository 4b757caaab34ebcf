"""The training stage on a DataFrame: split, fit, calibrate, set thresholds, evaluate, audit and explain.

``train`` touches no service; ``training.tracking`` logs its result to MLflow and registers the model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from healthflow.errors import InvalidInputError
from healthflow.settings import Settings
from training.calibration import CalibrationChoice, Calibrator, choose_calibrator
from training.evaluation import Evaluation, evaluate_scorer
from training.explain import Explanation, explain
from training.fairness import FairnessReport, fairness_report
from training.fingerprint import data_fingerprint
from training.model import BoostingParams, FeatureTypes, fit_catboost, raw_margin
from training.spec import TrainingSpec
from training.split import Split, split_by_patient_and_time
from training.thresholds import RiskThresholds, derive_thresholds

logger = logging.getLogger(__name__)

# Audit attributes that are never model inputs unless settings.train_use_race_as_feature is true.
PROTECTED_INPUTS = ("race", "ethnicity")


@dataclass
class TrainingResult:
    """Everything a run produces; ``test_probability`` is the calibrated CatBoost probability per test row."""

    spec: TrainingSpec
    types: FeatureTypes
    params: BoostingParams
    model: Any
    calibration: CalibrationChoice
    thresholds: RiskThresholds
    split: Split
    evaluations: dict[str, Evaluation]
    fairness: FairnessReport
    explanation: Explanation | None
    fingerprint: dict[str, Any]
    test_probability: np.ndarray
    baseline_probabilities: dict[str, np.ndarray]
    # AUROC of the uncalibrated model on validation rows: the number to compare feature sets and settings by,
    # because choices made by looking at the test side would make its metrics optimistic.
    validation_auroc: float = float("nan")
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def calibrator(self) -> Calibrator:
        return self.calibration.calibrator

    @property
    def expected_value(self) -> float | None:
        return self.explanation.expected_value if self.explanation else None


def feature_types(spec: TrainingSpec, *, use_race_as_feature: bool) -> FeatureTypes:
    """Return the model inputs of ``spec``, without race and ethnicity unless the setting allows them."""
    excluded = set() if use_race_as_feature else set(PROTECTED_INPUTS)
    return FeatureTypes(
        numeric=tuple(name for name in spec.numeric_features if name not in excluded),
        categorical=tuple(name for name in spec.categorical_features if name not in excluded),
    )


def boosting_params(settings: Settings) -> BoostingParams:
    return BoostingParams(
        iterations=settings.train_max_iterations,
        learning_rate=settings.train_learning_rate,
        depth=settings.train_depth,
        early_stopping_rounds=settings.train_early_stopping_rounds,
        class_weighting=settings.train_class_weighting,
        max_ctr_complexity=settings.train_max_ctr_complexity,
        seed=settings.train_random_seed,
    )


def labels(frame: pd.DataFrame, spec: TrainingSpec) -> np.ndarray:
    """Return the label column as 0/1 int64; raise InvalidInputError on missing or non-binary values."""
    values = frame[spec.label_column]
    if values.isna().any():
        raise InvalidInputError(
            f"label {spec.label_column} is missing on {int(values.isna().sum())} rows of {spec.feature_service}"
        )
    as_int = values.astype("int64")
    if not set(np.unique(as_int)) <= {0, 1}:
        raise InvalidInputError(f"label {spec.label_column} must be 0 or 1")
    return as_int.to_numpy()


def train(frame: pd.DataFrame, *, spec: TrainingSpec, settings: Settings, explain_model: bool = True) -> TrainingResult:
    """Run the training stage on a point-in-time training frame and return the fitted model and its evaluation.

    Every choice (early stopping, calibrator, operating point, risk thresholds) uses validation rows only;
    the test side is touched only for the reported metrics, the fairness audit and the SHAP sample.
    """
    spec.validate(frame.columns)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    types = feature_types(spec, use_race_as_feature=settings.train_use_race_as_feature)
    params = boosting_params(settings)
    seed = settings.train_random_seed

    split = split_by_patient_and_time(
        frame,
        spec=spec,
        test_fraction=settings.train_test_fraction,
        validation_fraction=settings.train_validation_fraction,
        seed=seed,
    )
    y_train, y_validation, y_test = (labels(side, spec) for side in (split.train, split.validation, split.test))

    model = fit_catboost(
        train=split.train,
        y_train=y_train,
        validation=split.validation,
        y_validation=y_validation,
        types=types,
        params=params,
    )
    timings["fit_seconds"] = time.perf_counter() - started

    calibration_started = time.perf_counter()
    validation_margin = raw_margin(model, split.validation, types)
    calibration = choose_calibrator(
        margin=validation_margin,
        y_true=y_validation,
        groups=split.validation[spec.patient_column].to_numpy(),
        folds=settings.train_calibration_folds,
        seed=seed,
    )
    thresholds = derive_thresholds(
        y_true=y_validation,
        probability=calibration.calibrator.probability(validation_margin),
        rule=settings.train_operating_point_rule,
        target_sensitivity=settings.train_target_sensitivity,
        high_risk_fraction=settings.train_high_risk_fraction,
    )
    timings["calibrate_seconds"] = time.perf_counter() - calibration_started

    evaluation_started = time.perf_counter()
    test_probability = calibration.calibrator.probability(raw_margin(model, split.test, types))
    baseline_probabilities = score_baselines(split, spec=spec, types=types, y_validation=y_validation, seed=seed)
    evaluations = {
        "model": evaluate_scorer(
            y_true=y_test,
            probability=test_probability,
            threshold=thresholds.operating_point,
            iterations=settings.train_bootstrap_iterations,
            seed=seed,
        )
    }
    for name, probability in baseline_probabilities.items():
        evaluations[name] = evaluate_scorer(
            y_true=y_test,
            probability=probability,
            threshold=None,
            iterations=settings.train_bootstrap_iterations,
            seed=seed,
        )
    audit = split.test.reindex(columns=[c for c in spec.audit_columns if c in split.test.columns])
    fairness = fairness_report(
        y_true=y_test,
        probability=test_probability,
        threshold=thresholds.operating_point,
        audit=audit,
        attributes=settings.train_fairness_attributes,
        min_group_size=settings.train_fairness_min_group_size,
        min_group_positives=settings.train_fairness_min_group_positives,
        exclude_unknown=settings.train_fairness_exclude_unknown,
    )
    timings["evaluate_seconds"] = time.perf_counter() - evaluation_started

    explanation = None
    if explain_model:
        explain_started = time.perf_counter()
        explanation = explain(model, split.test, types=types, sample_size=settings.train_shap_sample_size, seed=seed)
        timings["shap_seconds"] = time.perf_counter() - explain_started

    timings["train_total_seconds"] = time.perf_counter() - started
    return TrainingResult(
        spec=spec,
        types=types,
        params=params,
        model=model,
        calibration=calibration,
        thresholds=thresholds,
        split=split,
        evaluations=evaluations,
        fairness=fairness,
        explanation=explanation,
        fingerprint=data_fingerprint(pd.concat([split.train, split.validation]), spec=spec),
        test_probability=test_probability,
        baseline_probabilities=baseline_probabilities,
        validation_auroc=_auroc(y_validation, validation_margin),
        timings=timings,
    )


def score_baselines(
    split: Split, *, spec: TrainingSpec, types: FeatureTypes, y_validation: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """Return test probabilities of the logistic regression and, where the frame has it, the LACE score."""
    from training.baselines import fit_logistic_baseline, lace_probability, logistic_probability

    y_train = labels(split.train, spec)
    logistic = fit_logistic_baseline(train=split.train, y_train=y_train, types=types, seed=seed)
    # The balanced logistic regression is recalibrated on validation rows, like CatBoost, for a fair Brier score.
    validation_logit = _logit(logistic_probability(logistic, split.validation, types))
    platt = choose_platt(validation_logit, y_validation)
    probabilities = {
        "logistic_regression": platt.probability(_logit(logistic_probability(logistic, split.test, types)))
    }

    if spec.lace_column and spec.lace_column in split.test.columns:
        lace = lace_probability(
            validation_scores=split.validation[spec.lace_column],
            y_validation=y_validation,
            test_scores=split.test[spec.lace_column],
        )
        if lace is not None:
            probabilities["lace"] = lace
    else:
        logger.warning("%s has no LACE score column; the LACE baseline is skipped", spec.feature_service)
    return probabilities


def _auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y_true, score)) if len(np.unique(y_true)) == 2 else float("nan")


def choose_platt(margin: np.ndarray, y_true: np.ndarray) -> Calibrator:
    from training.calibration import fit_calibrator

    return fit_calibrator("platt", margin=margin, y_true=y_true)


def _logit(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(probability, 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))
