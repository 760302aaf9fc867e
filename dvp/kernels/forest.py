"""Evaluate a gradient-boosted forest of numerical binary trees on finite feature rows.

The trees (from a LightGBM model, :func:`flatten_lightgbm`) are flat arrays: for every
internal node its feature, threshold and children (a child ``< 0`` is leaf ``~child``).
A row goes left when ``x[feature] <= threshold``, LightGBM's rule for numerical splits;
missing values never reach this kernel (rows with a non-finite feature get no
prediction), so LightGBM's missing-value routing is not needed. The raw score is the sum
of the leaf values in tree order, as LightGBM sums it.
"""
from __future__ import annotations

import numpy as np
from numba import njit


#: rows walked through a tree together: independent walks keep the CPU busy while one
#: row's comparison resolves, and the select between children compiles without branches
BLOCK = 8


@njit(cache=True)
def _raw_score(X, feature, threshold, child, node_offset, depth, n_internal, leaf_value, leaf_offset, init, out):
    n = X.shape[0]
    n_trees = node_offset.shape[0]
    nodes = np.zeros(BLOCK, np.int64)
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        acc = np.full(BLOCK, init)
        for t in range(n_trees):
            base = node_offset[t]
            for k in range(BLOCK):
                nodes[k] = 0
            # leaves point to themselves, so every row can take exactly depth[t] steps
            for _ in range(depth[t]):
                for k in range(m):
                    j = base + nodes[k]
                    go_right = X[start + k, feature[j]] > threshold[j]
                    nodes[k] = child[2 * j + go_right]
            for k in range(m):
                acc[k] += leaf_value[leaf_offset[t] + nodes[k] - n_internal[t]]
        for k in range(m):
            out[start + k] = acc[k]


class Forest:
    """Flat arrays of a forest and how raw scores become predictions.

    Tree ``t`` owns nodes ``node_offset[t] ...``: its ``n_internal[t]`` internal nodes
    first (root 0), then its leaves, each leaf a node whose two children are itself
    (feature 0, threshold +inf). ``child[2 j]``/``child[2 j + 1]`` are node ``j``'s
    left/right children (tree-local numbers); ``depth[t]`` is the longest root-to-leaf
    path; leaf ``i`` of tree ``t`` has value ``leaf_value[leaf_offset[t] + i]``.
    ``transform`` is ``"identity"`` or ``"sigmoid"`` (binary classification).
    """

    def __init__(self, feature, threshold, child, node_offset, depth, n_internal, leaf_value, leaf_offset,
                 n_features, transform="identity", init=0.0):
        self.feature = np.ascontiguousarray(feature, np.int32)
        self.threshold = np.ascontiguousarray(threshold, np.float64)
        self.child = np.ascontiguousarray(child, np.int64)
        self.node_offset = np.ascontiguousarray(node_offset, np.int64)
        self.depth = np.ascontiguousarray(depth, np.int64)
        self.n_internal = np.ascontiguousarray(n_internal, np.int64)
        self.leaf_value = np.ascontiguousarray(leaf_value, np.float64)
        self.leaf_offset = np.ascontiguousarray(leaf_offset, np.int64)
        self.n_features = int(n_features)
        self.transform = transform
        self.init = float(init)

    @property
    def n_trees(self) -> int:
        return len(self.node_offset)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for ``X`` (n, n_features) float32/float64 with finite values, shape (n,)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}, expected (n, {self.n_features})")
        if X.dtype not in (np.float32, np.float64):
            raise ValueError(f"X must be float32 or float64, got {X.dtype}")
        X = np.ascontiguousarray(X)
        out = np.empty(X.shape[0])
        _raw_score(X, self.feature, self.threshold, self.child, self.node_offset, self.depth, self.n_internal,
                   self.leaf_value, self.leaf_offset, self.init, out)
        if self.transform == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-out))
        return out


def flatten_lightgbm(booster) -> Forest:
    """A :class:`Forest` equal to a LightGBM ``Booster`` on finite rows.

    Raises
    ------
    ValueError
        For trees this kernel cannot evaluate (categorical splits, linear trees,
        objectives other than regression/binary, ``sigmoid`` other than 1).
    """
    model = booster.dump_model()
    objective = str(model.get("objective", "regression")).split()
    if objective[0] == "binary":
        if any(p.startswith("sigmoid:") and float(p.split(":")[1]) != 1.0 for p in objective[1:]):
            raise ValueError("binary objective with sigmoid != 1")
        transform = "sigmoid"
    elif objective[0] in ("regression", "regression_l2", "l2", "huber", "fair", "regression_l1", "quantile"):
        transform = "identity"
    else:
        raise ValueError(f"objective {model.get('objective')!r} is not supported")
    feature, threshold, child, leaf_value = [], [], [], []
    node_offset, depth, n_internal, leaf_offset = [], [], [], []
    for tree in model["tree_info"]:
        root = tree["tree_structure"]
        n_int = tree["num_leaves"] - 1
        n_leaves = tree["num_leaves"]
        base = len(feature)
        node_offset.append(base)
        n_internal.append(n_int)
        leaf_offset.append(len(leaf_value))
        feature.extend([0] * (n_int + n_leaves))
        threshold.extend([np.inf] * (n_int + n_leaves))
        # every node starts as a self-loop (what leaves stay); internal nodes are filled below
        for j in range(n_int + n_leaves):
            child.extend([j, j])
        values = [0.0] * n_leaves
        max_depth = 0
        if "split_index" not in root:
            values[0] = root["leaf_value"]
        stack = [(root, 0)] if "split_index" in root else []
        while stack:
            node, d = stack.pop()
            if node.get("decision_type", "<=") != "<=":
                raise ValueError(f"split {node.get('decision_type')!r} is not supported")
            j = node["split_index"]
            feature[base + j] = node["split_feature"]
            threshold[base + j] = node["threshold"]
            for k, side in enumerate(("left_child", "right_child")):
                c = node[side]
                if "split_index" in c:
                    child[2 * (base + j) + k] = c["split_index"]
                    stack.append((c, d + 1))
                else:
                    child[2 * (base + j) + k] = n_int + c["leaf_index"]
                    values[c["leaf_index"]] = c["leaf_value"]
                    max_depth = max(max_depth, d + 1)
        depth.append(max_depth)
        leaf_value.extend(values)
    return Forest(feature, threshold, child, node_offset, depth, n_internal, leaf_value, leaf_offset,
                  model["max_feature_idx"] + 1, transform)
