"""Fairness audit on a small table whose metrics are computed by hand."""

import pandas as pd
import pytest

from healthflow.errors import InvalidInputError
from monitoring.alerts import fairness_alerts
from monitoring.fairness import fairness_audit

# Group F: TP 1, FN 1, FP 1, TN 1 -> selection 0.5, TPR 0.5, FPR 0.5, FNR 0.5.
# Group M: TP 2, FN 0, FP 0, TN 2 -> selection 0.5, TPR 1.0, FPR 0.0, FNR 0.0.
# Group X: one row, below the minimum size of 2.
TABLE = pd.DataFrame(
    {
        "sex": ["F", "F", "F", "F", "M", "M", "M", "M", "X"],
        "age_band": ["18-44", "18-44", "65-74", "65-74", "18-44", "18-44", "65-74", "65-74", None],
        "y_true": [1, 1, 0, 0, 1, 1, 0, 0, 1],
        "y_pred": [1, 0, 1, 0, 1, 1, 0, 0, 1],
        "y_score": [0.9, 0.4, 0.6, 0.2, 0.8, 0.7, 0.3, 0.1, 0.9],
    }
)


def audit(**overrides):
    arguments = dict(
        y_true="y_true", y_pred="y_pred", y_score="y_score", sensitive_features=["sex", "age_band"], min_group_size=2
    )
    arguments.update(overrides)
    return fairness_audit(TABLE, **arguments)


def group(result, attribute, name):
    return next(item for item in result.groups if item.attribute == attribute and item.group == name)


def test_fairness_group_rates_match_hand_counts():
    result = audit()
    female, male = group(result, "sex", "F"), group(result, "sex", "M")

    assert female.count == 4
    assert female.metrics["selection_rate"] == 0.5
    assert female.metrics["tpr"] == 0.5
    assert female.metrics["fpr"] == 0.5
    assert female.metrics["fnr"] == 0.5
    assert male.metrics["tpr"] == 1.0
    assert male.metrics["fpr"] == 0.0
    assert male.metrics["auroc"] == 1.0
    assert female.metrics["auroc"] == 0.75
    assert female.metrics["mean_score"] == pytest.approx(0.525)
    assert female.metrics["calibration_gap"] == pytest.approx(0.025)


def test_fairness_gaps_match_hand_differences():
    result = audit()

    assert result.gap("sex", "tpr").difference == 0.5
    assert result.gap("sex", "tpr").ratio == 0.5
    assert result.gap("sex", "fpr").difference == 0.5
    assert result.gap("sex", "fpr").ratio == 0.0
    assert result.gap("sex", "fnr").difference == 0.5
    assert result.gap("sex", "fnr").ratio == 0.0
    assert result.gap("sex", "selection_rate").difference == 0.0
    assert result.gap("sex", "selection_rate").ratio == 1.0
    assert result.gap("sex", "auroc").difference == pytest.approx(0.25)
    assert result.gap("sex", "tpr").groups_compared == 2


def test_fairness_small_group_reported_not_computed():
    result = audit()
    small = group(result, "sex", "X")
    unknown_age = group(result, "age_band", "unknown")

    assert small.too_small is True
    assert small.count == 1
    assert small.metrics == {}
    assert unknown_age.too_small is True


def test_fairness_without_labels_has_label_free_metrics():
    result = audit(y_true=None)
    female = group(result, "sex", "F")

    assert set(female.metrics) == {"selection_rate", "mean_score"}
    assert result.labels_known is False
    assert {gap.metric for gap in result.gaps} == {"selection_rate", "mean_score"}


def test_fairness_single_large_group_has_no_gaps():
    result = audit(min_group_size=5)

    assert all(item.too_small for item in result.groups)
    assert result.gaps == []


def test_fairness_alerts_over_limit_only():
    alerts = fairness_alerts(audit(), fairness_gap_limit=0.4)
    subjects = sorted(alert.subject for alert in alerts)

    # age_band selection: 3 of 4 in 18-44, 1 of 4 in 65-74, so a 0.5 gap.
    assert subjects == ["age_band/selection_rate", "sex/fnr", "sex/fpr", "sex/tpr"]


def test_fairness_alerts_only_for_alert_attributes():
    alerts = fairness_alerts(audit(), fairness_gap_limit=0.4, attributes=["sex"])

    assert sorted(alert.subject for alert in alerts) == ["sex/fnr", "sex/fpr", "sex/tpr"]


def test_fairness_gap_needs_two_defined_groups():
    # Every 18-44 row is a readmission and every 65-74 row is not, so each rate is defined in one group only.
    result = audit()

    assert result.gap("age_band", "tpr").difference is None
    assert result.gap("age_band", "fpr").difference is None
    assert result.gap("age_band", "selection_rate").difference == 0.5


def test_fairness_rejects_non_probability_scores():
    table = TABLE.assign(y_score=TABLE["y_score"] * 10)

    with pytest.raises(InvalidInputError, match="between 0 and 1"):
        fairness_audit(
            table, y_true="y_true", y_pred="y_pred", y_score="y_score", sensitive_features=["sex"], min_group_size=2
        )


def test_fairness_rejects_missing_attribute():
    with pytest.raises(InvalidInputError, match="lacks columns"):
        audit(sensitive_features=["race"])
