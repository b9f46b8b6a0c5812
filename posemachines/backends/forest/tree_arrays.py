"""A fitted forest as a few flat arrays: only what prediction reads, an order of magnitude smaller.

scikit-learn keeps, for every node of every tree, 64 bytes of bookkeeping (impurity, sample
counts) and a float64 class distribution, although prediction reads the distribution of the
leaves only. Here the trees of a forest are concatenated, each in scikit-learn's depth-first
order (a node's left child is the next node), and stored as:

``tree_start``  (T + 1,) int64    where each tree's nodes begin
``max_depth``   (T,) int32        each tree's depth
``feature``     (N,) int16/int32  the feature a node splits on; -1 for a leaf
``threshold``   (I,) float32      each split node's threshold, rounded down to float32
``right``       (I,) int32        each split node's right child, counted from its tree's start
``missing_left`` (I,) uint8       where a missing value goes (scikit-learn's flag)
``leaf_size``   (L,) uint8/int16  how many classes each leaf gives a non-zero probability
``leaf_class``  (V,) uint8/int16  those classes (columns of ``classes_``), leaf after leaf
``leaf_value``  (V,) float32      their probabilities

The inputs a tree sees are float32 (scikit-learn casts them), so a threshold rounded down to
the largest float32 not above it sends every input the same way as the float64 one: the leaves
reached are identical, and the beliefs differ only by float32 rounding of the leaf
probabilities (relative 6e-8). Loading builds ordinary scikit-learn estimators from the arrays
through the trees' own state protocol; no code is read from the file.
"""

from __future__ import annotations

import copy
import json

import numpy as np

from posemachines.errors import PoseMachinesError

KINDS = ("RandomForestClassifier", "ExtraTreesClassifier")
# Constructor parameters kept in the file (the rest are scikit-learn's defaults).
PARAMS = (
    "n_estimators",
    "criterion",
    "max_depth",
    "min_samples_split",
    "min_samples_leaf",
    "max_features",
    "bootstrap",
    "class_weight",
    "random_state",
)


def forest_to_arrays(forest) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and the metadata (strings) that rebuild ``forest``'s predictions."""
    kind = type(forest).__name__
    if kind not in KINDS or getattr(forest, "n_outputs_", 1) != 1:
        raise PoseMachinesError(f"cannot store a {kind} as tree arrays (single-output forests)")
    n_classes = int(forest.n_classes_)
    class_type = np.uint8 if n_classes <= 255 else np.int16
    parts = {k: [] for k in ("feature", "threshold", "right", "missing_left")}
    parts.update(leaf_size=[], leaf_class=[], leaf_value=[])
    starts, depths = [0], []
    for estimator in forest.estimators_:
        tree = estimator.tree_
        left, right = tree.children_left, tree.children_right
        split = left != -1
        if not np.array_equal(left[split], np.flatnonzero(split) + 1):
            raise PoseMachinesError("a tree is not in depth-first order; cannot store it")
        parts["feature"].append(np.where(split, tree.feature, -1))
        parts["threshold"].append(_round_down_to_float32(tree.threshold[split]))
        parts["right"].append(right[split].astype(np.int32))
        nodes = tree.__getstate__()["nodes"]
        parts["missing_left"].append(nodes["missing_go_to_left"][split].astype(np.uint8))
        values = tree.value[~split, 0, :n_classes]
        rows, cols = np.nonzero(values)
        parts["leaf_size"].append(np.bincount(rows, minlength=len(values)))
        parts["leaf_class"].append(cols.astype(class_type))
        parts["leaf_value"].append(values[rows, cols].astype(np.float32))
        starts.append(starts[-1] + tree.node_count)
        depths.append(tree.max_depth)
    n_features = int(forest.n_features_in_)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["feature"] = arrays["feature"].astype(np.int16 if n_features < 2**15 else np.int32)
    arrays["leaf_size"] = arrays["leaf_size"].astype(class_type)
    arrays["tree_start"] = np.asarray(starts, dtype=np.int64)
    arrays["max_depth"] = np.asarray(depths, dtype=np.int32)
    arrays["classes"] = np.asarray(forest.classes_)
    params = forest.get_params()
    metadata = {
        "kind": kind,
        "params": json.dumps({k: params[k] for k in PARAMS if k in params}),
        "n_features": str(n_features),
    }
    return arrays, metadata


def forest_from_arrays(arrays: dict[str, np.ndarray], metadata: dict[str, str]):
    """The scikit-learn forest ``forest_to_arrays`` stored, ready to predict."""
    from sklearn import ensemble, tree

    try:
        kind = metadata["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown forest kind {kind!r}")
        params = json.loads(metadata["params"])
        n_features = int(metadata["n_features"])
        starts = arrays["tree_start"].astype(np.int64)
        classes = arrays["classes"]
        feature = arrays["feature"].astype(np.int64)
        split = feature >= 0
        # Where each tree's split nodes, leaves and leaf values begin in their arrays.
        split_start = np.concatenate([[0], np.cumsum(split)])[starts]
        leaf_start = np.concatenate([[0], np.cumsum(~split)])[starts]
        leaf_size = arrays["leaf_size"].astype(np.int64)
        value_start = np.concatenate([[0], np.cumsum(leaf_size)])
        if value_start[-1] != len(arrays["leaf_value"]) or split_start[-1] != len(
            arrays["threshold"]
        ):
            raise ValueError("array lengths disagree")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PoseMachinesError(f"malformed tree arrays ({exc})") from None
    forest = getattr(ensemble, kind)(**params)
    single = (
        tree.ExtraTreeClassifier if kind == "ExtraTreesClassifier" else tree.DecisionTreeClassifier
    )
    n_classes = len(classes)
    estimators = []
    for t in range(len(starts) - 1):
        nodes = slice(starts[t], starts[t + 1])
        splits = slice(split_start[t], split_start[t + 1])
        leaves = slice(leaf_start[t], leaf_start[t + 1])
        values = slice(value_start[leaf_start[t]], value_start[leaf_start[t + 1]])
        state = _tree_state(
            feature[nodes],
            arrays["threshold"][splits],
            arrays["right"][splits],
            arrays["missing_left"][splits],
            leaf_size[leaves],
            arrays["leaf_class"][values],
            arrays["leaf_value"][values],
            n_classes,
            n_features,
        )
        state["max_depth"] = int(arrays["max_depth"][t])
        estimators.append(_estimator(single, state, n_features, classes, params))
    forest.estimators_ = estimators
    forest.estimator_ = single()
    forest.classes_ = classes
    forest.n_classes_ = n_classes
    forest.n_outputs_ = 1
    forest.n_features_in_ = n_features
    return forest


def compact_forest(forest):
    """``forest`` as its tree arrays rebuild it: the same leaves, leaf probabilities in float32,
    no per-node bookkeeping."""
    return forest_from_arrays(*forest_to_arrays(forest))


def joined_forests(forests: list):
    """One forest holding the trees of ``forests`` (fitted on the same classes and features), in
    order; it averages them all, as one forest averages its trees."""
    first = forests[0]
    for other in forests[1:]:
        if not np.array_equal(other.classes_, first.classes_):
            raise PoseMachinesError("cannot join forests fitted on different classes")
        if other.n_features_in_ != first.n_features_in_:
            raise PoseMachinesError("cannot join forests fitted on different features")
    joined = copy.copy(first)
    joined.estimators_ = [tree for forest in forests for tree in forest.estimators_]
    joined.set_params(n_estimators=len(joined.estimators_))
    return joined


def _tree_state(
    feature,
    threshold,
    right,
    missing_left,
    leaf_size,
    leaf_class,
    leaf_value,
    n_classes,
    n_features,
):
    """scikit-learn's Tree state (nodes and values) for one tree's arrays."""
    from sklearn.tree._tree import NODE_DTYPE

    n = len(feature)
    split = feature >= 0
    if len(threshold) != split.sum() or len(leaf_size) != n - split.sum():
        raise PoseMachinesError("malformed tree arrays (node counts disagree)")
    index = np.arange(n)
    # scikit-learn's compiled traversal trusts these: a child before its parent would loop, a
    # feature or class past the end would read outside the arrays.
    if (
        (split.any() and ((right <= index[split] + 1).any() or right.max() >= n))
        or (split.any() and feature.max() >= n_features)
        or (len(leaf_class) and leaf_class.max() >= n_classes)
    ):
        raise PoseMachinesError("malformed tree arrays (a child, feature or class out of range)")
    nodes = np.zeros(n, dtype=NODE_DTYPE)
    nodes["left_child"] = np.where(split, index + 1, -1)
    nodes["right_child"][split] = right
    nodes["right_child"][~split] = -1
    nodes["feature"] = np.where(split, feature, -2)
    nodes["threshold"] = -2.0
    nodes["threshold"][split] = threshold
    nodes["n_node_samples"] = 1
    nodes["weighted_n_node_samples"] = 1.0
    nodes["missing_go_to_left"][split] = missing_left
    values = np.zeros((n, 1, n_classes))
    leaf_rows = np.repeat(np.flatnonzero(~split), leaf_size)
    values[leaf_rows, 0, leaf_class.astype(np.int64)] = leaf_value
    return {"node_count": n, "nodes": nodes, "values": values}


def _estimator(single, state, n_features, classes, params):
    from sklearn.tree._tree import Tree

    n_classes = len(classes)
    tree = Tree(n_features, np.array([n_classes], dtype=np.intp), 1)
    tree.__setstate__(state)
    estimator = single(
        criterion=params.get("criterion", "gini"),
        max_depth=params.get("max_depth"),
        min_samples_leaf=params.get("min_samples_leaf", 1),
        max_features=params.get("max_features", "sqrt"),
    )
    estimator.tree_ = tree
    estimator.n_features_in_ = n_features
    estimator.n_outputs_ = 1
    estimator.classes_ = classes
    estimator.n_classes_ = n_classes
    return estimator


def _round_down_to_float32(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 not above each threshold: for float32 inputs x, ``x <= t32`` exactly
    when ``x <= t``."""
    t32 = threshold.astype(np.float32)
    above = t32.astype(np.float64) > threshold
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32
