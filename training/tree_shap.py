"""Exact TreeSHAP for CatBoost symmetric trees, computed once per (tree, leaf) when a model is loaded.

Every node at one depth of a symmetric (oblivious) tree tests the same split, so the leaf that a row reaches
fixes the row's side of every split in that tree. The path-dependent TreeSHAP values of one tree are therefore
a function of the leaf alone. ``LeafShapTable`` computes them for every leaf of every tree, and the SHAP values
of a row are the sum over trees of the entries of the leaves that ``calc_leaf_indexes`` returns for it.

The table reproduces CatBoost's ``ShapValues`` (calc type Regular) by the following rules. Each rule was found
by comparing candidate rules with the output of CatBoost 1.2.10 on trained models, and
tests/unit/test_tree_shap.py checks them:

- The players of one tree's Shapley game are the distinct owners of its splits. A numeric or one-hot split is
  owned by its feature. A CTR split is owned by the set of categorical features whose hashed values form the
  CTR (elements ``cat_feature_value``). The numeric borders and one-hot values (``cat_feature_exact_value``)
  that CatBoost adds to a combination get no share. Two splits are one player only when their owner sets are
  equal, so CTR(a) and CTR(a, b) in one tree are two players.
- A player's Shapley value is split equally among the features of its owner set.
- The value function is the path-dependent one: a split outside the coalition sends the row down both sides,
  weighted by the model's leaf weights. The root of a tree is the last split of its list in the model's JSON.
- The expected value is the sum over trees of the leaf-weighted mean leaf value, plus the model's bias.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The build evaluates 2**depth feature subsets for each of the 2**depth leaves of a tree, and the table keeps
# 2**depth rows per tree, so deeper trees are left to CatBoost's own SHAP.
MAX_TABLE_DEPTH = 8

# Largest scratch array of the build, in float64 elements (64 MiB); trees are processed in batches under it.
_BATCH_ELEMENTS = 1 << 23

_DOCUMENT_KEYS = ("ctr_data", "features_info", "model_info", "oblivious_trees", "scale_and_bias")
_TREE_KEYS = ("leaf_values", "leaf_weights", "splits")
_FEATURE_KINDS = ("float_features", "categorical_features", "ctrs")
_SPLIT_TYPES = ("FloatFeature", "OneHotFeature", "OnlineCtr")


class UnsupportedModelError(ValueError):
    """Raised for a model whose SHAP values the leaf table cannot reproduce, so callers use CatBoost's ShapValues."""


@dataclass(frozen=True)
class _BinaryFeature:
    """One binary split of the model, in CatBoost's ``split_index`` order: its JSON fields and its owners."""

    split_type: str
    fields: dict[str, Any]
    owners: frozenset[int]


@dataclass(frozen=True)
class _Tree:
    """One symmetric tree: the owners of each split in JSON order (bit d of the leaf index), leaf values and weights."""

    owners: tuple[frozenset[int], ...]
    leaf_values: np.ndarray
    leaf_weights: np.ndarray


class LeafShapTable:
    """Per-leaf SHAP values of a CatBoost model with symmetric trees, equal to CatBoost's ``ShapValues``.

    ``explain`` turns the leaf indexes of rows (``model.calc_leaf_indexes(pool)``) into raw margins, SHAP values
    in the model's feature order and the expected value, so one table lookup replaces predict and SHAP.
    The constructor raises UnsupportedModelError for any model it cannot reproduce exactly: another grow
    policy, more than one prediction dimension (multiclass), text or embedding features, trees deeper than
    ``max_depth``, or anything unknown in the model's JSON.
    """

    def __init__(self, model: Any, *, max_depth: int = MAX_TABLE_DEPTH) -> None:
        from catboost import CatBoost

        if not isinstance(model, CatBoost):
            raise UnsupportedModelError(f"expected a fitted CatBoost model, got {type(model).__name__}")

        document = _model_json(model)
        _check_document_keys(document)
        features_info = document.get("features_info") or {}
        self.feature_names = _feature_names(model, features_info)
        self.scale, self.bias = _scale_and_bias(document)
        self.numeric_borders = _numeric_borders(features_info)

        trees = _trees(document, _binary_features(features_info), model, max_depth=max_depth)
        self.tree_count = len(trees)
        self.depths = np.array([len(tree.owners) for tree in trees], dtype=np.int64)
        self.expected_value = self.bias + self.scale * sum(_weighted_mean(tree) for tree in trees)

        # Trees are padded to the largest leaf count and owner count, so a lookup is one gather for all rows.
        leaf_capacity = 1 << int(self.depths.max(initial=0))
        self._leaf_counts = 1 << self.depths
        self._offsets = np.arange(self.tree_count, dtype=np.int64) * leaf_capacity
        self._leaf_values = np.zeros((self.tree_count, leaf_capacity))
        for index, tree in enumerate(trees):
            self._leaf_values[index, : len(tree.leaf_values)] = tree.leaf_values
        self._features, self._contributions = _contribution_table(trees, len(self.feature_names), leaf_capacity)

    @property
    def nbytes(self) -> int:
        """Memory held by the table's arrays, in bytes."""
        arrays = (self._leaf_counts, self._offsets, self._leaf_values, self._features, self._contributions)
        return sum(array.nbytes for array in arrays)

    def leaf_values(self, tree: int) -> np.ndarray:
        """Return the leaf values of one tree, indexed like ``calc_leaf_indexes``, before scale and bias."""
        return self._leaf_values[tree, : self._leaf_counts[tree]].copy()

    def contributions(self, tree: int) -> np.ndarray:
        """Return one tree's SHAP values per leaf (leaves x features, model feature order), before scale."""
        leaf_count = int(self._leaf_counts[tree])
        dense = np.zeros((leaf_count, len(self.feature_names) + 1))
        rows = self._contributions[self._offsets[tree] : self._offsets[tree] + leaf_count]
        for column, feature in enumerate(self._features[tree]):
            dense[:, feature] += rows[:, column]
        return dense[:, :-1]

    def explain(self, leaf_indexes: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """Return (raw margins, SHAP values rows x features in log-odds, expected value) for rows' leaf indexes.

        ``leaf_indexes`` is ``model.calc_leaf_indexes(pool)`` on the whole model: one row per input row and
        one column per tree. For every row the SHAP values plus the expected value equal the raw margin.
        """
        leaves = np.asarray(leaf_indexes, dtype=np.int64)
        if leaves.ndim != 2 or leaves.shape[1] != self.tree_count:
            raise ValueError(
                f"leaf indexes have shape {leaves.shape}, expected (rows, {self.tree_count}): pass "
                "calc_leaf_indexes of the whole model, without ntree_start or ntree_end"
            )
        if leaves.size and (leaves.min() < 0 or (leaves >= self._leaf_counts).any()):
            raise ValueError("a leaf index is out of range for its tree: pass calc_leaf_indexes of this table's model")

        positions = leaves + self._offsets
        margins = self.bias + self.scale * self._leaf_values.ravel()[positions].sum(axis=1)

        # Sum each row's gathered (tree, owner) entries into its feature columns. The extra last column
        # collects the padding entries and is dropped.
        rows, width = leaves.shape[0], len(self.feature_names) + 1
        columns = self._features[np.newaxis, :, :] + (np.arange(rows) * width)[:, np.newaxis, np.newaxis]
        gathered = self._contributions[positions]
        sums = np.bincount(columns.ravel(), weights=gathered.ravel(), minlength=rows * width)
        contributions = self.scale * sums.reshape(rows, width)[:, :-1]
        return margins, contributions, self.expected_value

    def max_difference_from_catboost(self, model: Any, pool: Any) -> float:
        """Return the largest absolute difference from CatBoost's own raw margins, ShapValues and expected value.

        CatBoost 1.2.10 raises CatBoostError for ShapValues of a model whose scale is not 1.
        """
        margins, contributions, expected_value = self.explain(model.calc_leaf_indexes(pool))
        reference = np.asarray(model.get_feature_importance(pool, type="ShapValues"), dtype="float64")
        raw = np.asarray(model.predict(pool, prediction_type="RawFormulaVal"), dtype="float64")
        differences = (
            np.abs(contributions - reference[:, :-1]).max(),
            np.abs(expected_value - reference[:, -1]).max(),
            np.abs(margins - raw).max(),
        )
        return float(max(differences))


def _model_json(model: Any) -> dict[str, Any]:
    """Return the model as CatBoost's JSON export, read back from a temporary file."""
    from catboost import CatBoostError

    with tempfile.TemporaryDirectory(prefix="leaf-shap-") as folder:
        path = Path(folder) / "model.json"
        try:
            model.save_model(str(path), format="json")
        except CatBoostError as error:
            # CatBoost exports text and embedding features only in its binary format.
            raise UnsupportedModelError(f"CatBoost cannot export the model as JSON: {error}") from error
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _check_document_keys(document: dict[str, Any]) -> None:
    if "oblivious_trees" not in document:
        raise UnsupportedModelError(
            "the model has non-symmetric trees (grow policy Depthwise or Lossguide), but the leaf table supports only "
            "SymmetricTree"
        )
    unexpected = sorted(set(document) - set(_DOCUMENT_KEYS))
    if unexpected:
        raise UnsupportedModelError(f"the model's JSON has sections {unexpected} that the leaf table does not know")


def _feature_names(model: Any, features_info: dict[str, Any]) -> list[str]:
    """Return the model's feature names, checking that the JSON numbers its features 0..n-1 the same way."""
    unexpected = sorted(key for key, value in features_info.items() if key not in _FEATURE_KINDS and value)
    if unexpected:
        raise UnsupportedModelError(
            f"the model has features of kinds {unexpected}, "
            "but the leaf table supports only numeric and categorical ones"
        )

    indexes = sorted(
        feature["flat_feature_index"]
        for kind in ("float_features", "categorical_features")
        for feature in features_info.get(kind) or []
    )
    names = list(model.feature_names_)
    if indexes != list(range(len(names))):
        raise UnsupportedModelError(
            f"the model's JSON numbers its features {indexes}, but the model has {len(names)} feature names"
        )
    return names


def _scale_and_bias(document: dict[str, Any]) -> tuple[float, float]:
    scale, biases = document.get("scale_and_bias", [1.0, [0.0]])
    if len(biases) != 1:
        raise UnsupportedModelError(
            f"the model predicts {len(biases)} values per row (multiclass or multi-target), "
            "but the leaf table supports one"
        )
    return float(scale), float(biases[0])


def _numeric_borders(features_info: dict[str, Any]) -> dict[int, tuple[float, ...]]:
    """Return the split borders of each numeric feature, keyed by its index in the model's feature order."""
    return {
        feature["flat_feature_index"]: tuple(float(border) for border in feature.get("borders") or [])
        for feature in features_info.get("float_features") or []
    }


def _binary_features(features_info: dict[str, Any]) -> list[_BinaryFeature]:
    """List the model's binary splits in ``split_index`` order: numeric borders, one-hot values, then CTR borders."""
    category_flat = {
        feature["feature_index"]: feature["flat_feature_index"]
        for feature in features_info.get("categorical_features") or []
    }
    binary: list[_BinaryFeature] = []

    for feature in features_info.get("float_features") or []:
        owners = frozenset({feature["flat_feature_index"]})
        for border in feature.get("borders") or []:
            fields = {"float_feature_index": feature["feature_index"], "border": border}
            binary.append(_BinaryFeature("FloatFeature", fields, owners))

    for feature in features_info.get("categorical_features") or []:
        owners = frozenset({feature["flat_feature_index"]})
        for value in feature.get("values") or []:
            fields = {"cat_feature_index": feature["feature_index"], "value": value}
            binary.append(_BinaryFeature("OneHotFeature", fields, owners))

    for ctr in features_info.get("ctrs") or []:
        owners = _ctr_owners(ctr, category_flat)
        for border in ctr["borders"]:
            fields = {"border": border, "ctr_target_border_idx": ctr.get("target_border_idx", 0)}
            binary.append(_BinaryFeature("OnlineCtr", fields, owners))
    return binary


def _ctr_owners(ctr: dict[str, Any], category_flat: dict[int, int]) -> frozenset[int]:
    """Return the categorical features that own a CTR split: those whose hashed values form the CTR.

    Numeric borders (``float_feature``) and one-hot values (``cat_feature_exact_value``) in a combination
    own no share, as in CatBoost's ShapValues.
    """
    owners = set()
    for element in ctr["elements"]:
        kind = element.get("combination_element")
        if kind == "cat_feature_value":
            owners.add(category_flat[element["cat_feature_index"]])
        elif kind not in ("float_feature", "cat_feature_exact_value"):
            raise UnsupportedModelError(f"CTR {ctr.get('identifier')} has an element of unknown kind {kind!r}")
    if not owners:
        raise UnsupportedModelError(f"CTR {ctr.get('identifier')} combines no categorical feature values")
    return frozenset(owners)


def _trees(document: dict[str, Any], binary: list[_BinaryFeature], model: Any, *, max_depth: int) -> list[_Tree]:
    """Read the symmetric trees, with leaf values and weights as CatBoost's API returns them (exact doubles)."""
    values = np.asarray(model.get_leaf_values(), dtype="float64")
    weights = np.asarray(model.get_leaf_weights(), dtype="float64")
    leaf_total = sum(len(tree["leaf_values"]) for tree in document["oblivious_trees"])
    if leaf_total != len(values) or leaf_total != len(weights):
        raise UnsupportedModelError(
            f"the model's JSON has {leaf_total} leaves, but get_leaf_values returns {len(values)} and "
            f"get_leaf_weights {len(weights)}"
        )

    trees = []
    start = 0
    for index, tree in enumerate(document["oblivious_trees"]):
        unexpected = sorted(set(tree) - set(_TREE_KEYS))
        if unexpected:
            raise UnsupportedModelError(f"tree {index} has fields {unexpected} that the leaf table does not know")

        splits = tree.get("splits") or []
        if len(splits) > max_depth:
            raise UnsupportedModelError(f"tree {index} has depth {len(splits)}, over the table's maximum {max_depth}")
        owners = tuple(_split_owners(split, binary, index) for split in splits)
        leaf_count = len(tree["leaf_values"])
        if leaf_count != 1 << len(splits):
            raise UnsupportedModelError(
                f"tree {index} has {leaf_count} leaf values for {len(splits)} splits, expected {1 << len(splits)}"
            )
        stop = start + leaf_count
        parsed = _Tree(owners, values[start:stop], weights[start:stop])
        _check_weights(parsed, index)
        trees.append(parsed)
        start = stop
    return trees


def _split_owners(split: dict[str, Any], binary: list[_BinaryFeature], tree: int) -> frozenset[int]:
    """Return the features owning one split, after checking that ``split_index`` points at a matching split."""
    split_type = split.get("split_type")
    if split_type not in _SPLIT_TYPES:
        raise UnsupportedModelError(f"tree {tree} has a split of unknown type {split_type!r}")

    index = split.get("split_index", -1)
    if not 0 <= index < len(binary):
        raise UnsupportedModelError(f"tree {tree} has split_index {index}, outside the model's {len(binary)} splits")

    expected = binary[index]
    if expected.split_type != split_type or any(split.get(key) != value for key, value in expected.fields.items()):
        raise UnsupportedModelError(
            f"tree {tree}: split {split} does not match split {index} of the model's feature list {expected.fields}"
        )
    return expected.owners


def _check_weights(tree: _Tree, index: int) -> None:
    if tree.leaf_weights.sum() <= 0:
        raise UnsupportedModelError(
            f"tree {index} has no leaf weights, which CatBoost's SHAP then takes from the training data"
        )

    # CatBoost's expected value for such a tree differs from the weighted mean, in a way not reproduced here.
    # Models trained by CatBoost give empty leaves the value 0.
    if np.any((tree.leaf_weights == 0) & (tree.leaf_values != 0)):
        raise UnsupportedModelError(f"tree {index} has a leaf with zero weight but a non-zero value")


def _weighted_mean(tree: _Tree) -> float:
    return float(np.dot(tree.leaf_weights, tree.leaf_values) / tree.leaf_weights.sum())


def _player_pattern(owners: tuple[frozenset[int], ...]) -> tuple[int, ...]:
    """Number each split by its player, in order of first appearance: splits with equal owners share a number."""
    numbers: dict[frozenset[int], int] = {}
    return tuple(numbers.setdefault(owner, len(numbers)) for owner in owners)


def _contribution_table(trees: list[_Tree], feature_count: int, leaf_capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (owner features per tree, SHAP values per (tree, leaf) and owner feature).

    Shapes are (trees, width) and (trees * leaf_capacity, width), with width the largest number of features one
    tree uses. Padding entries hold feature ``feature_count`` and the value 0.
    """
    owned = [sorted(set().union(*tree.owners)) for tree in trees]
    width = max((len(features) for features in owned), default=0) or 1
    features = np.full((len(trees), width), feature_count, dtype=np.int64)
    table = np.zeros((len(trees) * leaf_capacity, width))

    # Trees with the same depth and the same pattern of repeated players are computed together.
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, tree in enumerate(trees):
        groups.setdefault(_player_pattern(tree.owners), []).append(index)

    for pattern, members in groups.items():
        shapley = _shapley_by_leaf_batched(pattern, [trees[index] for index in members])
        for position, index in enumerate(members):
            tree, columns = trees[index], owned[index]
            features[index, : len(columns)] = columns
            rows = slice(index * leaf_capacity, index * leaf_capacity + len(tree.leaf_values))
            players = list(dict.fromkeys(tree.owners))
            for player, owners in enumerate(players):
                for feature in owners:
                    table[rows, columns.index(feature)] += shapley[position, :, player] / len(owners)
    return features, table


def _shapley_by_leaf_batched(pattern: tuple[int, ...], trees: list[_Tree]) -> np.ndarray:
    """Return _shapley_by_leaf for trees sharing ``pattern``, in batches that keep scratch memory bounded."""
    leaf_count = 1 << len(pattern)
    subset_count = 1 << (max(pattern, default=-1) + 1)
    batch = max(1, _BATCH_ELEMENTS // (leaf_count * subset_count))
    parts = []
    for start in range(0, len(trees), batch):
        chunk = trees[start : start + batch]
        values = np.stack([tree.leaf_values for tree in chunk])
        weights = np.stack([tree.leaf_weights for tree in chunk])
        parts.append(_shapley_by_leaf(pattern, values, weights))
    return np.concatenate(parts)


def _shapley_by_leaf(pattern: tuple[int, ...], values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Return the Shapley value of each player for a row reaching each leaf, shape (trees, leaves, players).

    ``pattern[d]`` is the player of split d (bit d of the leaf index). ``values`` and ``weights`` have shape
    (trees, leaves). The value of a coalition for a row is the path-dependent expectation: the splits of
    players in the coalition follow the row's leaf, the other splits follow both sides in proportion to
    the leaf weights below them.
    """
    depth = len(pattern)
    player_count = max(pattern, default=-1) + 1
    tree_count, leaf_count = values.shape

    # After a reshape in C order, axis 1 + level is bit (depth - 1 - level) of the leaf index. CatBoost's root
    # is the last split, so that axis is the split tested ``level`` steps below the root.
    cube = (tree_count,) + (2,) * depth
    level_players = [pattern[depth - 1 - level] for level in range(depth)]
    ratios = _cover_ratios(weights.reshape(cube))
    leaf_values = values.reshape(cube)

    coalition_values = np.empty((1 << player_count, tree_count, leaf_count))
    for coalition in range(1 << player_count):
        weighted = leaf_values
        unknown_axes = []
        for level, player in enumerate(level_players):
            if not (coalition >> player) & 1:
                weighted = weighted * ratios[level]
                unknown_axes.append(1 + level)
        # The sum over the unknown splits leaves one value per combination of known sides. Broadcasting it
        # back gives every leaf the value of its own known sides.
        expected = weighted.sum(axis=tuple(unknown_axes), keepdims=True)
        coalition_values[coalition] = np.broadcast_to(expected, cube).reshape(tree_count, leaf_count)

    shapley = np.zeros((tree_count, leaf_count, player_count))
    for player in range(player_count):
        bit = 1 << player
        for coalition in range(1 << player_count):
            if coalition & bit:
                continue
            size = coalition.bit_count()
            share = math.factorial(size) * math.factorial(player_count - size - 1) / math.factorial(player_count)
            shapley[:, :, player] += share * (coalition_values[coalition | bit] - coalition_values[coalition])
    return shapley


def _cover_ratios(weights: np.ndarray) -> list[np.ndarray]:
    """Return, per level below the root, each leaf's share of its node's weight taken by its side of the split.

    A node without weight gets the ratio 0: all its leaves have the value 0 (checked by _check_weights), so
    the ratio multiplies 0 whatever it is.
    """
    depth = weights.ndim - 1
    ratios = []
    for level in range(depth):
        node = weights.sum(axis=tuple(range(1 + level, 1 + depth)), keepdims=True)
        side = weights.sum(axis=tuple(range(2 + level, 1 + depth)), keepdims=True)
        ratio = np.zeros(np.broadcast_shapes(node.shape, side.shape))
        np.divide(side, node, out=ratio, where=np.broadcast_to(node > 0, ratio.shape))
        ratios.append(ratio)
    return ratios
