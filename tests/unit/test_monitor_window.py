"""Window parsing, the population shift of the drift simulation, and the audit of one window."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from healthflow.errors import InvalidInputError
from healthflow.settings import load_settings
from monitoring.alerts import DATA_QUALITY, DRIFT
from monitoring.run import monitor_window
from monitoring.simulate import Shift, band_order, shift_population
from monitoring.window import parse_window, window_ending

BANDS = ["18-44", "45-64", "65-74", "75-89", "90+"]


@pytest.mark.parametrize(("text", "hours"), [("7d", 168), ("36h", 36), ("2w", 336), (" 1.5d ", 36)])
def test_window_parses_lengths(text, hours):
    assert parse_window(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["", "7", "d7", "-1d", "0d", "7m"])
def test_window_rejects_bad_lengths(text):
    with pytest.raises(InvalidInputError, match="invalid window"):
        parse_window(text)


def test_window_needs_aware_end():
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        window_ending(timedelta(days=1), end=datetime(2026, 1, 1))


def test_window_ends_at_given_time():
    end = datetime(2026, 1, 8, tzinfo=UTC)

    window = window_ending(timedelta(days=7), end=end)

    assert window.start == datetime(2026, 1, 1, tzinfo=UTC)


def test_band_order_uses_first_number():
    assert band_order(["90+", "65-74", "18-44", "75-89", "45-64"]) == BANDS


def test_shift_moves_bands_and_stays():
    frame = pd.DataFrame({"age_band": ["18-44", "75-89", "90+", None], "length_of_stay_days": [1.0, 2.0, 3.0, 4.0]})
    frame.loc[4] = ["45-64", 5.0]

    shifted = shift_population(frame, shift=Shift(age_band_steps=2, stay_factor=2.0))

    # The bands present are 18-44, 45-64, 75-89 and 90+, so two steps up from 18-44 is 75-89.
    assert shifted["age_band"].tolist() == ["75-89", "90+", "90+", None, "90+"]
    assert shifted["length_of_stay_days"].tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert frame["age_band"].tolist()[0] == "18-44"


def test_shift_rejects_missing_column():
    with pytest.raises(InvalidInputError, match="lacks column 'length_of_stay_days'"):
        shift_population(pd.DataFrame({"age_band": BANDS}), shift=Shift())


def make_window(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    probability = rng.random(rows)
    return pd.DataFrame(
        {
            "age_band": rng.choice(BANDS, rows, p=[0.3, 0.3, 0.2, 0.15, 0.05]),
            "sex": rng.choice(["female", "male"], rows),
            "length_of_stay_days": rng.gamma(2.0, 2.0, rows).round(1),
            "charlson_index": rng.poisson(2.0, rows),
            "probability": probability,
            "risk_level": np.where(probability >= 0.7, "high", np.where(probability >= 0.4, "medium", "low")),
            "race": rng.choice(["white", "black", "asian"], rows),
            "ethnicity": rng.choice(["hispanic", "not-hispanic"], rows),
            "label": np.nan,
        }
    )


@pytest.fixture(scope="module")
def settings():
    return load_settings(monitor_drift_share_limit=0.3, monitor_min_group_size=30, monitor_min_window_rows=30)


@pytest.mark.slow
def test_audit_of_shifted_window_raises_drift_alert(settings):
    reference = make_window(1200, seed=10).drop(columns=["probability", "risk_level", "label"])
    current = make_window(600, seed=11)
    current = shift_population(current, shift=Shift(age_band_steps=2, stay_factor=1.8))

    audit = monitor_window(reference, current, settings=settings)

    assert sorted(audit.drift.drifted_columns) == ["age_band", "length_of_stay_days"]
    assert [alert.kind for alert in audit.alerts if alert.kind == DRIFT] == [DRIFT]
    assert audit.fairness.labels_known is False
    assert audit.drift.classification_snapshot is None


@pytest.mark.slow
def test_audit_of_unshifted_window_raises_no_drift(settings):
    reference = make_window(1200, seed=10).drop(columns=["probability", "risk_level", "label"])

    audit = monitor_window(reference, make_window(600, seed=12), settings=settings)

    assert audit.drift.drifted_columns == []
    assert [alert for alert in audit.alerts if alert.kind in (DRIFT, DATA_QUALITY)] == []


@pytest.mark.slow
def test_audit_flags_missing_feature_values(settings):
    reference = make_window(1200, seed=10).drop(columns=["probability", "risk_level", "label"])
    current = make_window(600, seed=12)
    current["charlson_index"] = current["charlson_index"].astype(float)
    current.loc[current.index[:300], "charlson_index"] = np.nan

    audit = monitor_window(reference, current, settings=settings)

    assert [alert.subject for alert in audit.alerts if alert.kind == DATA_QUALITY] == ["charlson_index/missing_share"]


def test_audit_rejects_small_window(settings):
    reference = make_window(100, seed=10)

    with pytest.raises(InvalidInputError, match="fewer than HEALTHFLOW_MONITOR_MIN_WINDOW_ROWS"):
        monitor_window(reference, make_window(10, seed=1), settings=settings)
