"""A binary gradient-boosting model's trees as flat arrays, scored without scikit-learn's per-tree loop.

`Forest` answers the raw score (baseline plus one leaf value per tree, summed in tree order,
bit-identical to scikit-learn's) three ways, and `compiled.verified` checks every one of them
against scikit-learn at load:
  leaf masks  (`LeafMasks`, any batch): each split node, when a row goes right, rules out the
              leaves of its left subtree; a row's leaf in a tree is the leftmost leaf no split
              ruled out. Per input feature (and per one-hot block, whose category fixes all of
              its indicator features at once) the masks of every tree are precomputed for every
              interval between that feature's thresholds, so a batch costs one `searchsorted`
              and one table look-up per feature, an AND over the features, and the lowest set
              bit: arithmetic on (rows x trees) arrays, no per-node step, no Python per row;
  walk        (`raw_walk`): all (row, tree) pairs move one level per numpy step — the fallback for
              a row the masks do not cover (a one-hot block with two indicators set: never built
              by the compiled pipeline, only by the threshold probes);
  by tree     (`raw_by_tree`): scikit-learn's own compiled per-tree predictor, for a forest whose
              trees have more leaves than a mask has bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class NotCompiled(ValueError):
    """The pipeline (or this batch) cannot be reproduced exactly by array operations."""


WALK_MAX_ROWS = 64
"""Without leaf masks, batches up to this many rows walk all trees at once and larger ones go tree by
tree (measured crossover on the default model: 32 rows 1.8 vs 3.3 ms, 256 rows 13.8 vs 5.9 ms)."""

MASK_CHUNK_ROWS = 256
"""Leaf masks score a batch this many rows at a time: the (rows x trees) arrays of a chunk stay in
the CPU cache (measured on 4,096 rows: one pass over all rows is memory-bound and slower)."""


class LeafMasks:
    """Every tree's split nodes as bit masks over its leaves (at most 64), tabled per feature interval.

    Leaves are numbered left to right; a split node's mask clears the leaves of its left subtree
    (the ones a row that goes right cannot reach). For feature j with sorted distinct thresholds
    t, a row with value x goes right at exactly the nodes whose threshold is below x, so the AND of
    their masks depends only on `searchsorted(t, x)`: `tables[j][k]` holds it for every tree. The
    AND over all features keeps exactly the leaves no split ruled out; the row's leaf is the
    lowest set bit. Indicator features of one one-hot block (one threshold each) are tabled
    together by which indicator is set, so a block costs one look-up, not one per category.
    """

    def __init__(self, predictors: Sequence[Any], n_features: int, groups: Sequence[Sequence[int]]) -> None:
        n_trees = len(predictors)
        widest = max(int(np.count_nonzero(p.nodes["is_leaf"])) for p in predictors)
        if widest > 64:
            raise NotCompiled(f"trees with {widest} leaves (leaf masks hold 64)")
        bits = 32 if widest <= 32 else 64
        self.dtype = np.dtype(np.uint32 if bits == 32 else np.uint64)
        ones = self._ones = (1 << bits) - 1
        splits: dict[int, list[tuple[float, int, int]]] = {}
        self._values = np.zeros((n_trees, widest), dtype=np.float64)
        for tree, predictor in enumerate(predictors):
            order, left_leaves = _leaf_order(predictor.nodes)
            nodes = predictor.nodes
            for node, leaf in order.items():
                self._values[tree, leaf] = float(nodes["value"][node])
            for node, leaves in left_leaves.items():
                mask = ones
                for leaf in leaves:
                    mask &= ~(1 << leaf)
                splits.setdefault(int(nodes["feature_idx"][node]), []).append(
                    (float(nodes["num_threshold"][node]), tree, mask)
                )
        self._offsets = np.arange(n_trees, dtype=np.intp) * widest
        thresholds: dict[int, np.ndarray] = {}
        tables: dict[int, np.ndarray] = {}
        for feature, items in splits.items():
            if not 0 <= feature < n_features:
                raise NotCompiled(f"a split on feature {feature} of {n_features}")
            unique = np.unique(np.asarray([t for t, _, _ in items], dtype=np.float64))
            table = np.full((len(unique) + 1, n_trees), ones, dtype=self.dtype)
            for threshold, tree, mask in items:
                table[int(np.searchsorted(unique, threshold)) + 1, tree] &= mask
            thresholds[feature] = unique
            tables[feature] = np.bitwise_and.accumulate(table, axis=0)
        self._singles: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        grouped: set[int] = set()
        for group in groups:
            members = [j for j in group if j in tables]
            if len(members) < 2 or any(len(thresholds[j]) != 1 for j in members):
                continue
            # row k < len(members): only indicator k is above its threshold; the last row: none is
            table = np.full((len(members) + 1, n_trees), ones, dtype=self.dtype)
            for k, j in enumerate(members):
                table[k] = tables[j][1]
            self._blocks.append(
                (np.asarray(members, dtype=np.intp), np.asarray([thresholds[j][0] for j in members]), table)
            )
            grouped.update(members)
        for feature in sorted(set(tables) - grouped):
            self._singles.append((feature, thresholds[feature], tables[feature]))

    def raw(self, features: np.ndarray, baseline: float) -> tuple[np.ndarray, np.ndarray]:
        """(raw scores, rows the masks could not score): the latter a boolean array, mostly all False."""
        n = features.shape[0]
        scores = np.empty(n, dtype=np.float64)
        uncovered = np.zeros(n, dtype=bool)
        for start in range(0, n, MASK_CHUNK_ROWS):
            chunk = slice(start, min(n, start + MASK_CHUNK_ROWS))
            scores[chunk], uncovered[chunk] = self._raw_chunk(features[chunk], baseline)
        return scores, uncovered

    def _raw_chunk(self, features: np.ndarray, baseline: float) -> tuple[np.ndarray, np.ndarray]:
        n, n_trees = features.shape[0], self._values.shape[0]
        alive = np.full((n, n_trees), self._ones, dtype=self.dtype)
        uncovered = np.zeros(n, dtype=bool)
        for feature, thresholds, table in self._singles:
            alive &= table[np.searchsorted(thresholds, features[:, feature])]
        for members, thresholds, table in self._blocks:
            above = features[:, members] > thresholds
            count = np.count_nonzero(above, axis=1)
            uncovered |= count > 1
            alive &= table[np.where(count == 1, np.argmax(above, axis=1), len(members))]
        lowest = alive & (~alive + self.dtype.type(1))
        leaf = np.frexp(lowest.astype(np.float64))[1] - 1  # a power of two's exponent: exact in float64
        scores = np.empty((n, n_trees + 1), dtype=np.float64)
        scores[:, 0] = baseline
        scores[:, 1:] = self._values.ravel()[self._offsets + leaf]
        return np.cumsum(scores, axis=1)[:, -1], uncovered  # strictly left to right, like sklearn's +=


def _leaf_order(nodes: np.ndarray) -> tuple[dict[int, int], dict[int, list[int]]]:
    """Leaves numbered left to right (node → number), and each split node's left-subtree leaf numbers."""
    order: dict[int, int] = {}
    left_leaves: dict[int, list[int]] = {}
    spans: dict[int, tuple[int, int]] = {}  # node → its subtree's [first, last] leaf number
    stack: list[tuple[int, bool]] = [(0, False)]
    while stack:
        node, children_done = stack.pop()
        if nodes["is_leaf"][node]:
            order[node] = len(order)
            spans[node] = (order[node], order[node])
            continue
        left, right = int(nodes["left"][node]), int(nodes["right"][node])
        if not children_done:
            stack += [(node, True), (right, False), (left, False)]  # left popped (numbered) first
            continue
        spans[node] = (spans[left][0], spans[right][1])
        left_leaves[node] = list(range(spans[left][0], spans[left][1] + 1))
    return order, left_leaves


class Forest:
    """A binary HistGradientBoostingClassifier's trees as leaf masks and as flat arrays.

    Scored by leaf masks when the trees allow (see `LeafMasks`; measured on the default model,
    quiet machine: 1 row 40 µs, 32 rows 90 µs, 4,096 rows 4 ms). The walk below answers rows
    the masks do not cover, and every batch when there are no masks.

    scikit-learn predicts tree by tree: 200 trees cost 200 Python-level calls (~2 ms here)
    whatever the number of rows, holding the GIL the server's event loop needs. Here the
    nodes of every tree live in one set of arrays; each step moves every (row, tree) pair
    still on a split node to its child with a few vectorised operations, so a batch costs
    about as many numpy calls as the deepest tree is deep (0.14 ms for one row, 1.4 ms for
    64, against 2.1 and 2.4 ms). The split rule is sklearn's (`x <= threshold` goes left);
    the leaf values are added in tree order onto the baseline, as sklearn adds them, so the
    raw scores are bit-identical — which `verified` checks at load all the same.
    """

    def __init__(self, clf: Any, groups: Sequence[Sequence[int]] = ()) -> None:
        """`groups`: the feature positions of each one-hot block (its indicators, at most one set)."""
        try:
            predictors = clf._predictors
            baseline = np.asarray(clf._baseline_prediction, dtype=np.float64)
            loss = clf._loss
        except AttributeError as exc:
            raise NotCompiled(f"this scikit-learn's gradient boosting has no {exc.name}") from exc
        if clf.n_trees_per_iteration_ != 1 or baseline.size != 1:
            raise NotCompiled("gradient boosting with more than one tree per iteration (multiclass)")
        if clf.is_categorical_ is not None and bool(np.any(clf.is_categorical_)):
            raise NotCompiled("gradient boosting with native categorical splits")
        roots, feature, threshold, left, right, value = [], [], [], [], [], []
        offset = 0
        for (predictor,) in predictors:
            nodes = predictor.nodes
            here = np.arange(len(nodes), dtype=np.intp) + offset
            leaf = nodes["is_leaf"].astype(bool)
            roots.append(offset)
            feature.append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp))
            threshold.append(np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64))
            # A leaf is its own child on both sides, so a walk that reached it stays there.
            left.append(np.where(leaf, here, nodes["left"].astype(np.intp) + offset))
            right.append(np.where(leaf, here, nodes["right"].astype(np.intp) + offset))
            value.append(nodes["value"].astype(np.float64))
            offset += len(nodes)
        self._roots = np.asarray(roots, dtype=np.intp)
        self._feature = np.concatenate(feature)
        self._threshold = np.concatenate(threshold)
        children = np.stack([np.concatenate(left), np.concatenate(right)], axis=1)
        self._leaf = children[:, 0] == np.arange(offset)
        self._children = children.ravel()  # node n's left child at 2n, right at 2n + 1
        self._value = np.concatenate(value)
        self._baseline = float(baseline.ravel()[0])
        self._loss = loss
        self._trees = [predictor for (predictor,) in predictors]
        try:
            self._bitsets = clf._bin_mapper.make_known_categories_bitsets()
        except AttributeError:  # another scikit-learn: large batches walk too
            self._trees = []
        self._masks: LeafMasks | None = None
        try:
            self._masks = LeafMasks(self._trees, int(clf.n_features_in_), groups) if self._trees else None
        except NotCompiled:  # e.g. trees wider than a mask: the walk and the per-tree predictor answer
            self._masks = None

    def raw(self, features: np.ndarray) -> np.ndarray:
        """Baseline plus the leaf value of every tree, for each row.

        By leaf masks when there are some. Without them, up to `WALK_MAX_ROWS` rows all trees
        are walked at once (a few numpy calls per level); beyond that the per-(row, tree) arrays
        cost more than scikit-learn's own compiled predictor per tree, so that one answers.
        """
        if np.isnan(features).any():
            raise NotCompiled("missing values take sklearn's own missing-value path")
        if self._masks is not None:
            return self.raw_masks(features)
        if features.shape[0] > WALK_MAX_ROWS and self._trees:
            return self.raw_by_tree(features)
        return self.raw_walk(features)

    def raw_walk(self, features: np.ndarray) -> np.ndarray:
        """All trees at once: every (row, tree) pair still on a split node moves one level per step."""
        n_rows, n_trees = features.shape[0], len(self._roots)
        node = np.tile(self._roots, n_rows)  # (row, tree) pairs, row-major
        flat = np.ascontiguousarray(features).ravel()
        at = np.repeat(np.arange(n_rows, dtype=np.intp) * features.shape[1], n_trees)
        active = np.flatnonzero(~self._leaf[node])
        current, at = node[active], at[active]
        while active.size:
            right = flat[at + self._feature[current]] > self._threshold[current]
            current = self._children[2 * current + right]
            going = ~self._leaf[current]
            if not going.all():  # pairs that reached their leaf are written back and dropped
                done = ~going
                node[active[done]] = current[done]
                active, current, at = active[going], current[going], at[going]
        scores = np.empty((n_rows, n_trees + 1), dtype=np.float64)
        scores[:, 0] = self._baseline
        scores[:, 1:] = self._value[node].reshape(n_rows, n_trees)
        return np.cumsum(scores, axis=1)[:, -1]  # strictly left to right, like sklearn's +=

    def raw_masks(self, features: np.ndarray) -> np.ndarray:
        """By leaf masks; a row they do not cover (see `LeafMasks`) walks."""
        if self._masks is None:
            raise NotCompiled("this forest has no leaf masks")
        scores, uncovered = self._masks.raw(features, self._baseline)
        if uncovered.any():
            scores[uncovered] = self.raw_walk(features[uncovered])
        return scores

    def raw_by_tree(self, features: np.ndarray) -> np.ndarray:
        """scikit-learn's own per-tree predictor, summed as its `_raw_predict` sums (zeros, += baseline,
        += each tree in order), without the pipeline's input checks and DataFrame handling."""
        known, f_idx_map = self._bitsets
        total = np.zeros(features.shape[0], dtype=np.float64)
        total += self._baseline
        for tree in self._trees:
            total += tree.predict(features, known, f_idx_map, 1)
        return total

    def paths(self) -> list[Callable[[np.ndarray], np.ndarray]]:
        """Every way `raw` may answer: `verified` checks each against scikit-learn."""
        masks = [self.raw_masks] if self._masks is not None else []
        return [*masks, self.raw_walk, self.raw_by_tree] if self._trees else [self.raw_walk]

    def predict_proba(self, features: np.ndarray, raw: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        scores = (raw or self.raw)(features)
        return np.asarray(self._loss.predict_proba(scores.reshape(-1, 1)))

    def boundary_rows(self, base: np.ndarray, per_feature: int = 16) -> np.ndarray:
        """`base` with one feature set exactly on a split threshold, or just above it.

        The split rule is where a re-implementation would go wrong (`<` for `<=`), and
        rows drawn from data almost never sit on a threshold: these do.
        """
        rows = []
        split = ~self._leaf
        for feature in np.unique(self._feature[split]).tolist():
            thresholds = np.unique(self._threshold[split & (self._feature == feature)])
            picked = thresholds[np.linspace(0, len(thresholds) - 1, min(per_feature, len(thresholds))).astype(int)]
            for value in [*picked.tolist(), *np.nextafter(picked, np.inf).tolist()]:
                row = base.copy()
                row[feature] = value
                rows.append(row)
        return np.asarray(rows, dtype=np.float64).reshape(-1, base.shape[0])
