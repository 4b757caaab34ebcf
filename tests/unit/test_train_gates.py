"""Promotion gates as pure rules."""

from __future__ import annotations

from training.promotion import decide, fairness_gaps_from_metrics

LIMITS = {"fnr": 0.10, "fpr": 0.10}
FAIR = {"race": {"fnr": 0.04, "fpr": 0.03}, "sex": {"fnr": 0.01, "fpr": 0.02}}


def test_better_fair_model_is_promoted() -> None:
    decision = decide(
        challenger_auroc=0.72,
        champion_auroc=0.70,
        champion_version="1",
        fairness_gaps=FAIR,
        gate_attributes=["race", "sex"],
        gap_limits=LIMITS,
    )
    assert decision.promoted
    assert decision.failures == []
    assert "beats champion version 1" in decision.summary()


def test_worse_model_is_not_promoted() -> None:
    decision = decide(
        challenger_auroc=0.69,
        champion_auroc=0.70,
        champion_version="1",
        fairness_gaps=FAIR,
        gate_attributes=["race", "sex"],
        gap_limits=LIMITS,
    )
    assert not decision.promoted
    assert decision.failures[0].startswith("performance gate failed")


def test_equal_auroc_is_not_promoted() -> None:
    decision = decide(
        challenger_auroc=0.70,
        champion_auroc=0.70,
        champion_version="1",
        fairness_gaps=FAIR,
        gate_attributes=["race"],
        gap_limits=LIMITS,
    )
    assert not decision.promoted


def test_unfair_model_is_not_promoted() -> None:
    unfair = {"race": {"fnr": 0.25, "fpr": 0.03}}
    decision = decide(
        challenger_auroc=0.80,
        champion_auroc=0.70,
        champion_version="1",
        fairness_gaps=unfair,
        gate_attributes=["race"],
        gap_limits=LIMITS,
    )
    assert not decision.promoted
    assert decision.failures == [
        "fairness gate failed: fnr difference across race groups is 0.250, over the limit 0.100"
    ]


def test_first_model_needs_only_fairness() -> None:
    decision = decide(
        challenger_auroc=0.60,
        champion_auroc=None,
        champion_version=None,
        fairness_gaps=FAIR,
        gate_attributes=["race"],
        gap_limits=LIMITS,
    )
    assert decision.promoted
    assert "no champion before" in decision.summary()


def test_both_gates_reported_when_both_fail() -> None:
    decision = decide(
        challenger_auroc=0.60,
        champion_auroc=0.70,
        champion_version="2",
        fairness_gaps={"race": {"fnr": 0.3}},
        gate_attributes=["race"],
        gap_limits=LIMITS,
    )
    assert len(decision.failures) == 2


def test_gaps_rebuilt_from_run_metrics() -> None:
    metrics = {
        "fairness_race_fnr_difference": 0.12,
        "fairness_age_band_selection_rate_difference": 0.3,
        "fairness_sex_auroc_difference": 0.01,
        "test_model_auroc": 0.7,
    }
    assert fairness_gaps_from_metrics(metrics) == {
        "race": {"fnr": 0.12},
        "age_band": {"selection_rate": 0.3},
        "sex": {"auroc": 0.01},
    }
