"""The leaf SHAP table against CatBoost's own ShapValues, on small models trained on seeded synthetic data."""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier, Pool

from serving.leaf_shap import probe_rows
from serving.model_handle import ChampionModel, ModelIdentity
from training.calibration import Calibrator
from training.model import BoostingParams, FeatureTypes, fit_catboost
from training.thresholds import RiskThresholds
from training.tree_shap import LeafShapTable, UnsupportedModelError

TOLERANCE = 1e-9
TEST_ROWS = 300
MIXED_CATEGORICAL = [2, 3, 4, 5]


def _fit(data, label, *, cat_features=None, **params) -> CatBoostClassifier:
    settings = {"iterations": 150, "depth": 4, "random_seed": 0, "verbose": False, "allow_writing_files": False}
    model = CatBoostClassifier(**{**settings, **params})
    model.fit(Pool(data, label, cat_features=cat_features))
    return model


def _assert_matches_catboost(model, pool) -> LeafShapTable:
    table = LeafShapTable(model)
    margins, contributions, expected_value = table.explain(model.calc_leaf_indexes(pool))
    reference = model.get_feature_importance(pool, type="ShapValues")
    raw = model.predict(pool, prediction_type="RawFormulaVal")

    assert contributions.shape == (pool.num_row(), pool.num_col())
    assert np.abs(contributions - reference[:, :-1]).max() <= TOLERANCE
    assert np.abs(expected_value - reference[:, -1]).max() <= TOLERANCE
    assert np.abs(margins - raw).max() <= TOLERANCE
    assert np.abs(contributions.sum(axis=1) + expected_value - margins).max() <= TOLERANCE
    return table


def _split_kinds(model) -> collections.Counter:
    """Count the model's splits by kind. A CTR split's kind is the sorted kinds of its combination elements."""
    document = _model_json(model)
    info = document["features_info"]
    kinds: list[tuple[str, ...]] = []
    for feature in info.get("float_features") or []:
        kinds += [("float",)] * len(feature.get("borders") or [])
    for feature in info.get("categorical_features") or []:
        kinds += [("one_hot",)] * len(feature.get("values") or [])
    for ctr in info.get("ctrs") or []:
        elements = tuple(sorted(element["combination_element"] for element in ctr["elements"]))
        kinds += [elements] * len(ctr["borders"])
    return collections.Counter(
        kinds[split["split_index"]] for tree in document["oblivious_trees"] for split in tree["splits"] or []
    )


def _model_json(model) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.json"
        model.save_model(str(path), format="json")
        return json.loads(path.read_text(encoding="utf-8"))


def _reached_leaf_weights(model, pool) -> np.ndarray:
    """Return the training weight of the leaf each row reaches in each tree (rows x trees)."""
    starts = np.concatenate([[0], np.cumsum(model.get_tree_leaf_counts())[:-1]]).astype(np.int64)
    return model.get_leaf_weights()[model.calc_leaf_indexes(pool) + starts]


def _numeric_frame(rows: int, seed: int, *, correlated: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return numeric features with NaN in column 1. Column 2 follows column 0 closely when ``correlated``.

    Test rows drawn without the correlation reach leaves that no training row reached (zero weight).
    """
    rng = np.random.default_rng(seed)
    first = rng.normal(size=rows)
    second = rng.normal(size=rows)
    second[rng.random(rows) < 0.15] = np.nan
    third = first + 0.05 * rng.normal(size=rows) if correlated else 2 * rng.normal(size=rows)
    # sin makes the label non-monotone in the first column, so trees split it at several depths.
    margin = 2 * np.sin(2 * first) + np.nan_to_num(second, nan=1.0) + third
    label = (rng.random(rows) < 1 / (1 + np.exp(-margin))).astype(int)
    return np.column_stack([first, second, third]), label


def _mixed_frame(rows: int, seed: int) -> tuple[list[list], np.ndarray]:
    """Return rows of 2 numeric and 4 categorical features whose label depends on pairs of categories."""
    rng = np.random.default_rng(seed)
    dose = rng.normal(size=rows)
    lab = rng.normal(size=rows)
    lab[rng.random(rows) < 0.15] = np.nan
    ward = rng.choice([f"ward-{i}" for i in range(10)], rows)
    unit = rng.choice([f"unit-{i}" for i in range(6)], rows)
    payer = rng.choice([f"payer-{i}" for i in range(5)], rows)
    flag = rng.choice(["yes", "no"], rows)
    margin = (
        0.8 * dose
        - 0.6 * np.nan_to_num(lab, nan=1.5)
        + 1.5 * np.isin(ward, ["ward-1", "ward-2"]) * (flag == "yes")
        - 1.2 * np.isin(ward, ["ward-3", "ward-4"]) * (flag == "no")
        + 2.0 * (unit == "unit-1") * np.isin(payer, ["payer-1", "payer-2"])
        + 1.5 * np.isin(ward, ["ward-5", "ward-6"]) * (dose > 0.5)
    )
    label = (rng.random(rows) < 1 / (1 + np.exp(-margin))).astype(int)
    data = [list(values) for values in zip(dose, lab, ward, unit, payer, flag, strict=True)]
    return data, label


def _three_way_frame(rows: int, seed: int) -> tuple[list[list], np.ndarray]:
    """Return rows whose label is a random function of three categories together, which favours 3-way CTRs."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 12, size=(rows, 3))
    lookup = np.random.default_rng(99).integers(0, 7, size=(12, 12, 12))
    score = rng.normal(size=rows)
    margin = np.where(lookup[codes[:, 0], codes[:, 1], codes[:, 2]] < 2, 1.5, -1.5) + 0.3 * score
    label = (rng.random(rows) < 1 / (1 + np.exp(-margin))).astype(int)
    data = [[value, f"a{a}", f"b{b}", f"d{d}"] for value, (a, b, d) in zip(score, codes, strict=True)]
    return data, label


@pytest.fixture(scope="module")
def numeric_model() -> CatBoostClassifier:
    data, label = _numeric_frame(4000, seed=1, correlated=True)
    return _fit(data, label)


@pytest.fixture(scope="module")
def mixed_model() -> CatBoostClassifier:
    data, label = _mixed_frame(5000, seed=1)
    return _fit(data, label, cat_features=MIXED_CATEGORICAL, max_ctr_complexity=2, one_hot_max_size=2)


@pytest.fixture(scope="module")
def mixed_pool() -> Pool:
    data, _ = _mixed_frame(TEST_ROWS, seed=2)
    data[0][2:] = ["ward-unseen", "unit-unseen", "payer-unseen", "maybe"]
    return Pool(data, cat_features=MIXED_CATEGORICAL)


def test_numeric_splits_match_catboost(numeric_model):
    data, _ = _numeric_frame(TEST_ROWS, seed=2, correlated=False)
    pool = Pool(data)
    features_per_tree = [
        [split["float_feature_index"] for split in tree["splits"] or []]
        for tree in _model_json(numeric_model)["oblivious_trees"]
    ]

    _assert_matches_catboost(numeric_model, pool)
    assert any(len(features) > len(set(features)) for features in features_per_tree)
    assert np.isnan(data[:, 1]).sum() > 10


def test_zero_weight_leaves_match_catboost(numeric_model):
    data, _ = _numeric_frame(TEST_ROWS, seed=3, correlated=False)
    pool = Pool(data)

    _assert_matches_catboost(numeric_model, pool)
    assert (_reached_leaf_weights(numeric_model, pool) == 0).any(axis=1).sum() > 50


def test_categorical_splits_match_catboost(mixed_model, mixed_pool):
    kinds = _split_kinds(mixed_model)

    _assert_matches_catboost(mixed_model, mixed_pool)
    assert kinds[("one_hot",)] > 0
    assert kinds[("cat_feature_value",)] > 0
    assert kinds[("cat_feature_value", "cat_feature_value")] > 0
    assert kinds[("cat_feature_value", "float_feature")] > 0
    assert kinds[("cat_feature_exact_value", "cat_feature_value")] > 0


def test_three_way_combinations_match_catboost():
    data, label = _three_way_frame(8000, seed=1)
    model = _fit(data, label, cat_features=[1, 2, 3], max_ctr_complexity=3)
    test_data, _ = _three_way_frame(TEST_ROWS, seed=2)

    table = _assert_matches_catboost(model, Pool(test_data, cat_features=[1, 2, 3]))
    assert _split_kinds(model)[("cat_feature_value",) * 3] > 0
    # Trees without a split also occur: one leaf that adds to the margin and to no feature.
    assert (table.depths == 0).any()


def test_pair_combination_credits_both_categories(mixed_model):
    table = LeafShapTable(mixed_model)
    owners_per_tree = _split_owners(_model_json(mixed_model))

    # CatBoost grows a pair CTR (a, b) in a tree that already splits on a, so b often enters a tree only
    # through the pair. Its column is then half the pair's Shapley value, which is not zero.
    checked = 0
    for index, owners in enumerate(owners_per_tree):
        for pair in {owner for owner in owners if len(owner) == 2}:
            for category in pair:
                if all(owner == pair for owner in owners if category in owner):
                    assert np.abs(table.contributions(index)[:, category]).max() > 0
                    checked += 1
    assert checked > 0


def _split_owners(document: dict) -> list[list[frozenset[int]]]:
    """Return, per tree, the features of each split: a CTR's hashed categorical features, or the split's feature."""
    info = document["features_info"]
    floats = {feature["feature_index"]: feature["flat_feature_index"] for feature in info["float_features"]}
    categories = {feature["feature_index"]: feature["flat_feature_index"] for feature in info["categorical_features"]}
    ctr_owners = [
        frozenset(
            categories[element["cat_feature_index"]]
            for element in ctr["elements"]
            if element["combination_element"] == "cat_feature_value"
        )
        for ctr in info["ctrs"]
    ]
    binary_owners = [
        frozenset({floats[f["feature_index"]]}) for f in info["float_features"] for _ in f["borders"] or []
    ]
    binary_owners += [
        frozenset({categories[f["feature_index"]]}) for f in info["categorical_features"] for _ in f.get("values") or []
    ]
    binary_owners += [owners for ctr, owners in zip(info["ctrs"], ctr_owners, strict=True) for _ in ctr["borders"]]
    return [
        [binary_owners[split["split_index"]] for split in tree["splits"] or []] for tree in document["oblivious_trees"]
    ]


def test_tree_tables_sum_to_explain(mixed_model, mixed_pool):
    table = LeafShapTable(mixed_model)
    leaves = mixed_model.calc_leaf_indexes(mixed_pool)
    starts = np.concatenate([[0], np.cumsum(mixed_model.get_tree_leaf_counts())[:-1]]).astype(np.int64)
    margins, contributions, _ = table.explain(leaves)

    summed = sum(table.contributions(tree)[leaves[:, tree]] for tree in range(table.tree_count))
    values = [table.leaf_values(tree) for tree in range(table.tree_count)]
    assert np.abs(summed - contributions).max() <= TOLERANCE
    assert np.array_equal(np.concatenate(values), mixed_model.get_leaf_values())
    assert np.abs(mixed_model.get_leaf_values()[leaves + starts].sum(axis=1) + table.bias - margins).max() <= TOLERANCE


def test_weighted_best_model_matches_catboost():
    data, label = _mixed_frame(6000, seed=4)
    train = Pool(data[:4000], label[:4000], cat_features=MIXED_CATEGORICAL)
    validation = Pool(data[4000:], label[4000:], cat_features=MIXED_CATEGORICAL)
    model = CatBoostClassifier(
        iterations=300,
        learning_rate=0.3,
        depth=4,
        auto_class_weights="Balanced",
        random_seed=0,
        verbose=False,
        allow_writing_files=False,
    )
    model.fit(train, eval_set=validation, use_best_model=True, early_stopping_rounds=20)
    test_data, _ = _mixed_frame(TEST_ROWS, seed=5)

    _assert_matches_catboost(model, Pool(test_data, cat_features=MIXED_CATEGORICAL))
    assert model.tree_count_ < 300
    assert not np.array_equal(model.get_leaf_weights(), np.round(model.get_leaf_weights()))


def test_scale_and_bias_applied_to_margins(mixed_model, mixed_pool):
    scaled = mixed_model.copy()
    scaled.set_scale_and_bias(0.5, 0.25)
    unscaled_table = LeafShapTable(mixed_model)
    _, unscaled, unscaled_expected = unscaled_table.explain(mixed_model.calc_leaf_indexes(mixed_pool))

    # CatBoost 1.2.10 raises for ShapValues when the scale is not 1, so only margins can be compared with it.
    table = LeafShapTable(scaled)
    margins, contributions, expected_value = table.explain(scaled.calc_leaf_indexes(mixed_pool))
    raw = scaled.predict(mixed_pool, prediction_type="RawFormulaVal")
    assert np.abs(margins - raw).max() <= TOLERANCE
    assert np.abs(contributions - 0.5 * unscaled).max() <= TOLERANCE
    assert expected_value == pytest.approx(0.25 + 0.5 * (unscaled_expected - unscaled_table.bias), abs=TOLERANCE)
    assert np.abs(contributions.sum(axis=1) + expected_value - margins).max() <= TOLERANCE


def test_production_settings_match_catboost():
    numeric = tuple(f"numeric_{i}" for i in range(18))
    categorical = tuple(f"category_{i}" for i in range(12))
    types = FeatureTypes(numeric=numeric, categorical=categorical)
    frame, label = _production_frame(types, rows=5000, seed=1)
    params = BoostingParams(
        iterations=300,
        learning_rate=0.1,
        depth=4,
        early_stopping_rounds=20,
        class_weighting="balanced",
        max_ctr_complexity=2,
        seed=0,
    )
    model = fit_catboost(
        train=frame[:4000],
        y_train=label[:4000],
        validation=frame[4000:],
        y_validation=label[4000:],
        types=types,
        params=params,
    )
    test_frame, _ = _production_frame(types, rows=TEST_ROWS, seed=2)

    _assert_matches_catboost(model, Pool(test_frame, cat_features=list(categorical)))
    assert model.tree_count_ < params.iterations
    assert _split_kinds(model)[("cat_feature_value", "cat_feature_value")] > 0


def _production_frame(types: FeatureTypes, *, rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    columns = {}
    for index, name in enumerate(types.numeric):
        values = rng.normal(size=rows)
        values[rng.random(rows) < 0.05 * (index % 3)] = np.nan
        columns[name] = values
    for index, name in enumerate(types.categorical):
        columns[name] = rng.choice([f"level-{level}" for level in range(2 + 2 * index)], rows)
    frame = pd.DataFrame(columns)
    margin = (
        frame["numeric_0"].fillna(0)
        - 0.5 * frame["numeric_1"].fillna(1)
        + 1.2 * (frame["category_3"].isin(["level-1", "level-2"]) & (frame["category_5"] == "level-3"))
        + 0.8 * (frame["category_0"] == "level-1")
        - 1.5
    )
    label = (rng.random(rows) < 1 / (1 + np.exp(-margin.to_numpy()))).astype(int)
    return frame, label


def test_depthwise_model_rejected():
    data, label = _numeric_frame(500, seed=1, correlated=False)
    model = _fit(data, label, iterations=5, grow_policy="Depthwise")

    with pytest.raises(UnsupportedModelError, match="non-symmetric"):
        LeafShapTable(model)


def test_multiclass_model_rejected():
    data, _ = _numeric_frame(500, seed=1, correlated=False)
    model = _fit(data, np.arange(500) % 3, iterations=5, loss_function="MultiClass")

    with pytest.raises(UnsupportedModelError, match="multiclass"):
        LeafShapTable(model)


def test_text_feature_model_rejected():
    rng = np.random.default_rng(1)
    notes = rng.choice(["fell at home", "chest pain", "routine check", "short of breath"], 400)
    data = [[value, note] for value, note in zip(rng.normal(size=400), notes, strict=True)]
    label = np.isin(notes, ["chest pain", "short of breath"]).astype(int)
    model = CatBoostClassifier(iterations=5, depth=3, verbose=False, allow_writing_files=False)
    model.fit(Pool(data, label, text_features=[1]))

    with pytest.raises(UnsupportedModelError, match="JSON"):
        LeafShapTable(model)


def test_deeper_than_maximum_rejected(numeric_model):
    with pytest.raises(UnsupportedModelError, match="over the table's maximum 3"):
        LeafShapTable(numeric_model, max_depth=3)


def test_non_catboost_object_rejected():
    with pytest.raises(UnsupportedModelError, match="expected a fitted CatBoost model"):
        LeafShapTable(object())


def test_zero_weight_leaf_with_value_rejected(numeric_model, tmp_path):
    document = _model_json(numeric_model)
    tree = next(tree for tree in document["oblivious_trees"] if 0 in tree["leaf_weights"])
    tree["leaf_values"][tree["leaf_weights"].index(0)] = 1.0
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    edited = CatBoostClassifier()
    edited.load_model(str(path), format="json")

    with pytest.raises(UnsupportedModelError, match="zero weight but a non-zero value"):
        LeafShapTable(edited)


def _add_section(document):
    document["text_processing"] = {}


def _add_tree_field(document):
    document["oblivious_trees"][0]["leaf_index_map"] = []


def _rename_split_type(document):
    document["oblivious_trees"][0]["splits"][0]["split_type"] = "EstimatedFeature"


def _shift_border(document):
    document["oblivious_trees"][0]["splits"][0]["border"] += 0.5


def _rename_ctr_element(document):
    document["features_info"]["ctrs"][0]["elements"][0]["combination_element"] = "text_feature"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_add_section, "sections \\['text_processing'\\]"),
        (_add_tree_field, "fields \\['leaf_index_map'\\]"),
        (_rename_split_type, "unknown type 'EstimatedFeature'"),
        (_shift_border, "does not match split"),
        (_rename_ctr_element, "unknown kind 'text_feature'"),
    ],
)
def test_unknown_json_content_rejected(mixed_model, monkeypatch, change, message):
    document = _model_json(mixed_model)
    change(document)
    monkeypatch.setattr("training.tree_shap._model_json", lambda model: document)

    with pytest.raises(UnsupportedModelError, match=message):
        LeafShapTable(mixed_model)


def test_explain_rejects_wrong_leaf_indexes(numeric_model):
    table = LeafShapTable(numeric_model)
    leaves = numeric_model.calc_leaf_indexes(Pool(np.zeros((2, 3))))

    with pytest.raises(ValueError, match="expected \\(rows, 150\\)"):
        table.explain(leaves[:, :-1])
    with pytest.raises(ValueError, match="out of range"):
        table.explain(leaves + 16)


def _champion(booster, types: FeatureTypes) -> ChampionModel:
    return ChampionModel(
        identity=ModelIdentity(name="unit", version="7", run_id="run-7", alias="champion"),
        booster=booster,
        types=types,
        calibrator=Calibrator("platt", slope=1.0, intercept=0.0),
        thresholds=RiskThresholds(operating_point=0.3, medium=0.3, high=0.6, rule="unit test values"),
        expected_value=0.0,
    )


MIXED_TYPES = FeatureTypes(numeric=("dose", "lab"), categorical=("ward", "unit", "payer", "flag"))


def _mixed_request_rows(count: int) -> list[dict]:
    data, _ = _mixed_frame(count, seed=6)
    rows = [dict(zip(MIXED_TYPES.names, values, strict=True)) for values in data]
    rows[0] = {name: None for name in MIXED_TYPES.names}
    rows[1]["ward"] = None
    return rows


def test_champion_explains_with_table(mixed_model, caplog):
    with caplog.at_level(logging.INFO, logger="serving.leaf_shap"):
        champion = _champion(mixed_model, MIXED_TYPES)
    rows = _mixed_request_rows(TEST_ROWS)

    margins, contributions, expected_value = champion.explain(rows)
    reference = mixed_model.get_feature_importance(champion.pool(rows), type="ShapValues")
    assert champion.shap_table is not None
    assert "SHAP values from the leaf table" in caplog.text
    assert np.abs(contributions - reference[:, :-1]).max() <= TOLERANCE
    assert expected_value == pytest.approx(reference[0, -1], abs=TOLERANCE)
    assert np.abs(margins - champion.raw_margin(rows)).max() <= TOLERANCE


def test_champion_falls_back_for_unsupported_model(caplog):
    data, label = _mixed_frame(1000, seed=1)
    depthwise = _fit(data, label, cat_features=MIXED_CATEGORICAL, iterations=20, grow_policy="Depthwise")
    with caplog.at_level(logging.WARNING, logger="serving.leaf_shap"):
        champion = _champion(depthwise, MIXED_TYPES)
    rows = _mixed_request_rows(20)

    _, contributions, _ = champion.explain(rows)
    reference = depthwise.get_feature_importance(champion.pool(rows), type="ShapValues")
    assert champion.shap_table is None
    assert "non-symmetric" in caplog.text
    assert np.array_equal(contributions, reference[:, :-1])


def test_champion_falls_back_when_table_disagrees(mixed_model, monkeypatch, caplog):
    class OffByOneMillionth(LeafShapTable):
        def explain(self, leaf_indexes):
            margins, contributions, expected_value = super().explain(leaf_indexes)
            return margins, contributions + 1e-6, expected_value

    monkeypatch.setattr("serving.leaf_shap.LeafShapTable", OffByOneMillionth)
    with caplog.at_level(logging.WARNING, logger="serving.leaf_shap"):
        champion = _champion(mixed_model, MIXED_TYPES)
    rows = _mixed_request_rows(5)

    _, contributions, _ = champion.explain(rows)
    reference = mixed_model.get_feature_importance(champion.pool(rows), type="ShapValues")
    assert champion.shap_table is None
    assert "differs from CatBoost's ShapValues by 1e-06" in caplog.text
    assert np.array_equal(contributions, reference[:, :-1])


def test_probe_rows_start_all_missing():
    borders = {0: (-1.0, 0.0, 2.0), 1: ()}
    rows = probe_rows(MIXED_TYPES, borders, count=4)

    assert len(rows) == 4
    assert all(value is None for value in rows[0].values())
    assert rows[1]["dose"] == -2.0
    assert rows[1]["lab"] == 0.0
    assert rows[2]["dose"] == 1.0
    assert rows[2]["lab"] is None
    assert rows[3]["dose"] is None
    assert {rows[number]["ward"] for number in range(1, 4)} == {None, "probe-1", "probe-3"}
