"""The leaf SHAP table of a served model, checked against CatBoost's own SHAP values before it is used.

``checked_shap_table`` builds ``training.tree_shap.LeafShapTable`` once per loaded model version and compares
it with CatBoost's ``ShapValues`` and raw margins on a few probe rows made from the feature types. It returns
None, after logging a warning, when the model is unsupported or the table disagrees, and the caller then
explains with CatBoost's ``ShapValues``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from training.model import FeatureTypes
from training.tree_shap import LeafShapTable, UnsupportedModelError

logger = logging.getLogger(__name__)

# Largest accepted absolute difference from CatBoost, in log-odds. The table is exact, so only the order of
# float64 additions differs, which stays far below this for thousands of trees.
PROBE_TOLERANCE = 1e-9

PROBE_ROW_COUNT = 6


def checked_shap_table(
    booster: Any, types: FeatureTypes, make_pool: Callable[[list[dict[str, Any]]], Any], model_label: str
) -> LeafShapTable | None:
    """Build the leaf table and check it on probe rows, returning None (and logging a WARNING) if it fails.

    ``make_pool`` turns rows into the Pool that serving passes to CatBoost, so the probe rows take the same path
    as requests.
    """
    from catboost import CatBoostError

    started = time.perf_counter()
    try:
        table = LeafShapTable(booster)
    except UnsupportedModelError as error:
        _warn_fallback(model_label, f"the model is not supported: {error}")
        return None
    build_ms = (time.perf_counter() - started) * 1000

    if len(table.feature_names) != len(types.names):
        _warn_fallback(
            model_label,
            f"the model has {len(table.feature_names)} features but its feature types list {len(types.names)}",
        )
        return None

    rows = probe_rows(types, table.numeric_borders)
    try:
        difference = table.max_difference_from_catboost(booster, make_pool(rows))
    except CatBoostError as error:
        _warn_fallback(model_label, f"CatBoost failed to compute the reference SHAP values: {error}")
        return None
    # Written so that a NaN difference also falls back.
    if not difference <= PROBE_TOLERANCE:
        _warn_fallback(model_label, f"it differs from CatBoost's ShapValues by {difference:.3g} on the probe rows")
        return None

    logger.info(
        "model %s: SHAP values from the leaf table (%s trees, %.1f MiB, built in %.0f ms, "
        "largest difference from CatBoost %.1e on %s probe rows)",
        model_label,
        table.tree_count,
        table.nbytes / 2**20,
        build_ms,
        difference,
        len(rows),
    )
    return table


def probe_rows(
    types: FeatureTypes, numeric_borders: dict[int, tuple[float, ...]], count: int = PROBE_ROW_COUNT
) -> list[dict[str, Any]]:
    """Return ``count`` rows: one with every feature missing, then rows spread over the model's split borders.

    In row k, numeric feature i is missing when i + k is a multiple of 3, and otherwise takes a value below,
    between or above its borders, from low in row 1 to high in the last row. Categorical features alternate
    between missing and an unseen value, because the model keeps only hashes of its training categories.
    ``numeric_borders`` is keyed by position in the model's feature order, where numeric features come first.
    """
    rows: list[dict[str, Any]] = [{name: None for name in types.names}]
    for number in range(1, count):
        fraction = (number - 1) / max(1, count - 2)
        row: dict[str, Any] = {}
        for index, name in enumerate(types.numeric):
            candidates = _values_around_borders(numeric_borders.get(index, ()))
            missing = (index + number) % 3 == 0
            row[name] = None if missing else candidates[round(fraction * (len(candidates) - 1))]
        for index, name in enumerate(types.categorical):
            row[name] = None if (index + number) % 2 == 0 else f"probe-{number}"
        rows.append(row)
    return rows


def _values_around_borders(borders: tuple[float, ...]) -> list[float]:
    """Return a value below the lowest border, one between each pair of neighbours and one above the highest."""
    if not borders:
        return [0.0]
    ordered = sorted(borders)
    between = [(low + high) / 2 for low, high in zip(ordered, ordered[1:], strict=False)]
    return [ordered[0] - 1.0, *between, ordered[-1] + 1.0]


def _warn_fallback(model_label: str, reason: str) -> None:
    logger.warning(
        "model %s: leaf SHAP table not used because %s; explaining with CatBoost's ShapValues", model_label, reason
    )
