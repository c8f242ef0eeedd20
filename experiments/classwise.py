"""Seed 003's class-wise claims as statistics of the seeds-and-points bootstrap.

Each function here returns a `statistic(seed_weights, point_weights) -> (B,)`
for `stats.bootstrap_statistic`: `B` bootstrap replicates, each a multinomial
weight per seed (`(B, seeds)`) and per test point (`(B, points)`), unit
weights giving the point estimate. Everything the statistic estimates from
the data is estimated again in every replicate from the weighted data: the
class accuracies are weighted class means (a class's weight is the summed
weight of its resampled points, not its size in the split), and the class
ranking of the contrasts is redone on them, so the interval counts how
uncertain the ranking is.

A replicate's weighted sums over seeds and points are matrix products,
`((w_seeds @ values) * w_points) @ groups` with `groups` the one-hot
`(points, groups)` membership of each point, so `B` = 10,000 replicates of
1,000 points cost a few products of that size.

Example:

```python
statistic = robust_minus_vulnerable(units, "pgdat", seeds=[0, 1, 2])
stats.bootstrap_statistic(statistic, n_seeds=3, n_points=1000)
```
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from experiments.outcomes import outcome


def halves(labels: np.ndarray) -> np.ndarray:
    """The cross-fitting half of each test point: the k-th point of a class goes to half k % 2.

    Args:
        labels: `(points,)` test labels.

    Returns:
        `(points,)` array of 0 / 1.
    """
    labels = np.asarray(labels)
    occurrence = np.zeros(len(labels), dtype=int)
    for c in np.unique(labels):
        occurrence[labels == c] = np.arange(np.sum(labels == c))
    return occurrence % 2


def _group_sums(values: np.ndarray, groups: np.ndarray, seed_weights: np.ndarray,
                point_weights: np.ndarray) -> np.ndarray:
    """`sum_s w_s sum_{i in g} w_i values[s, i]` of every replicate and group.

    Args:
        values: `(seeds, points)` values.
        groups: `(points, groups)` one-hot membership.
        seed_weights: `(B, seeds)` weights.
        point_weights: `(B, points)` weights.

    Returns:
        `(B, groups)` weighted sums.
    """
    return ((seed_weights @ values) * point_weights) @ groups


def _side_mean(side: np.ndarray, sums: np.ndarray, weights: np.ndarray) -> tuple:
    """Weighted mean over the classes of `side` (their summed sums over their summed weights).

    Args:
        side: `(B, halves, classes)` membership of the side.
        sums: `(B, halves, classes)` weighted sums of the scores.
        weights: `(B, halves, classes)` summed weights.

    Returns:
        `(mean, weight)`, the mean 0 where the side has no weight.
    """
    weight = np.sum(side * weights, axis=-1)
    total = np.sum(side * sums, axis=-1)
    return np.divide(total, weight, out=np.zeros_like(total), where=weight > 0), weight


def cross_fitted_contrast(labels: np.ndarray, rank: np.ndarray, score: np.ndarray, k: int = 5,
                          scale: float = 100.0) -> Callable:
    """Statistic `score(k lowest-ranked classes) - score(k highest)`, the ranking redone per replicate.

    Classes are ranked by their mean `rank` (over seeds and points) on one
    half of the test points (`halves`) and scored on the other half
    (cross-fitting: a class that looks weak by chance on some points is not
    scored on the same points), then the halves swap. In a replicate, the
    means are weighted means under its weights, and a class without weight
    in the ranking half is left out of that half's ranking. Within a score
    half H, `score(V_H)` is the weighted mean score of the points of the `k`
    lowest classes (at most half of the ranked classes, so the sides never
    overlap), `score(R_H)` that of the `k` highest; the statistic is the
    mean over halves, weighted by their points' weight, of
    `score(V_H) - score(R_H)` (0 for a half whose side has no weight).
    Ties between class means go to the lower class index.

    Args:
        labels: `(points,)` test labels.
        rank: `(seeds, points)` values whose class means rank the classes.
        score: `(seeds, points)` values that are contrasted.
        k: Classes on each side.
        scale: Multiplier of the contrast (100 gives percentage points).

    Returns:
        `statistic(seed_weights, point_weights) -> (B,)` for
        `stats.bootstrap_statistic`.
    """
    labels = np.asarray(labels)
    classes, index = np.unique(labels, return_inverse=True)
    n_classes = len(classes)
    # One group per (half, class): column half * n_classes + class index.
    groups = np.zeros((len(labels), 2 * n_classes))
    groups[np.arange(len(labels)), halves(labels) * n_classes + index] = 1.0
    rank, score = np.asarray(rank, np.float64), np.asarray(score, np.float64)

    def statistic(seed_weights: np.ndarray, point_weights: np.ndarray) -> np.ndarray:
        n = len(point_weights)
        points = (point_weights @ groups).reshape(n, 2, n_classes)
        weights = np.sum(seed_weights, axis=1)[:, None, None] * points
        rank_sums = _group_sums(rank, groups, seed_weights, point_weights).reshape(n, 2, n_classes)
        score_sums = _group_sums(score, groups, seed_weights, point_weights).reshape(n, 2, n_classes)
        present = weights > 0
        means = np.divide(rank_sums, weights, out=np.full_like(rank_sums, np.inf), where=present)
        order = np.argsort(means, axis=-1, kind="stable")  # classes left out sort last
        position = np.empty_like(order)
        np.put_along_axis(position, order, np.arange(n_classes), axis=-1)
        ranked = np.sum(present, axis=-1, keepdims=True)
        take = np.minimum(k, ranked // 2)
        # Ranked on half h, scored on half 1 - h.
        low = (position < take)[:, ::-1]
        high = ((position >= ranked - take) & (position < ranked))[:, ::-1]
        low_mean, low_weight = _side_mean(low, score_sums, weights)
        high_mean, high_weight = _side_mean(high, score_sums, weights)
        contrast = np.where((low_weight > 0) & (high_weight > 0), low_mean - high_mean, 0.0)
        return scale * np.sum(points.sum(axis=-1) * contrast, axis=1) / np.sum(point_weights, axis=1)

    return statistic


def _labels_and(units: dict, arm: str, seeds: Sequence[int], metrics: Sequence[str]) -> tuple:
    """`(labels, *outcomes)`: the arm's test labels and a `(seeds, points)` matrix per metric."""
    records = [units[arm][s] for s in seeds]
    labels = np.asarray(records[0]["eval"]["points"]["labels"])
    return (labels, *(np.stack([outcome(r, m) for r in records]).astype(np.float64) for m in metrics))


def vulnerable_minus_robust_drop(units: dict, arm: str, seeds: Sequence[int], weak: str = "PGD-20",
                                 strong: str = "AutoAttack", k: int = 5, scale: float = 100.0) -> Callable:
    """Seed 003 property 3: drop(vulnerable classes) - drop(robust classes).

    The drop of a point is `weak - strong` correctness; classes are ranked
    by their `weak` accuracy (`cross_fitted_contrast`).

    Args:
        units: `{arm: {seed: unit record}}`.
        arm: The arm whose classes are compared.
        seeds: Its seeds.
        weak: The weaker attack (ranks the classes).
        strong: The stronger attack.
        k: Classes on each side.
        scale: Multiplier (100 gives percentage points).

    Returns:
        The statistic, for `stats.bootstrap_statistic`.
    """
    labels, weak_acc, strong_acc = _labels_and(units, arm, seeds, (weak, strong))
    return cross_fitted_contrast(labels, weak_acc, weak_acc - strong_acc, k, scale)


def robust_minus_vulnerable(units: dict, arm: str, seeds: Sequence[int], metric: str = "AutoAttack",
                            k: int = 5, scale: float = 100.0) -> Callable:
    """Seed 003 Sec. 3: accuracy of the k most robust classes minus the k least robust.

    Ranked and scored on different halves (`cross_fitted_contrast`), so a
    gap made by chance alone has expectation 0.

    Args:
        units: `{arm: {seed: unit record}}`.
        arm: The arm whose classes are compared.
        seeds: Its seeds.
        metric: The accuracy that ranks and scores the classes.
        k: Classes on each side.
        scale: Multiplier (100 gives percentage points).

    Returns:
        The statistic, for `stats.bootstrap_statistic`.
    """
    labels, acc = _labels_and(units, arm, seeds, (metric,))
    # score(robust) - score(vulnerable): the contrast with the opposite sign.
    return cross_fitted_contrast(labels, acc, acc, k, -scale)


def weight_norm_covariance(units: dict, arm: str, seeds: Sequence[int], metric: str = "AutoAttack",
                           scale: float = 100.0) -> Callable:
    """Seed 003 Sec. 3.2: class robustness against the norm of the class's weight vector.

    Per seed, the class weight norms are standardized (mean 0, sd 1 over
    classes, `class_weight_norms` of the unit; fixed, as the models are) and
    the statistic is the covariance over classes of the standardized norm
    and the class accuracy, averaged over seeds (in accuracy units: > 0 when
    robust classes have larger weights). In a replicate, the class accuracy
    is the weighted mean over the class's resampled points, and the seeds'
    covariances are averaged with the seed weights; a class without weight
    (chance about e^-n_c) adds nothing to its covariance.

    Args:
        units: `{arm: {seed: unit record}}`.
        arm: The arm whose classes are compared.
        seeds: Its seeds.
        metric: The accuracy of a class.
        scale: Multiplier (100 gives percentage points).

    Returns:
        The statistic, for `stats.bootstrap_statistic`.

    Raises:
        KeyError: if a unit has no class weight norms.
    """
    labels, correct = _labels_and(units, arm, seeds, (metric,))
    classes, index = np.unique(labels, return_inverse=True)
    z = []
    for s in seeds:
        record = units[arm][s]
        if "class_weight_norms" not in record:
            raise KeyError(f"unit {arm}/seed{record['seed']} has no class weight norms "
                           "(analyses.add_weight_norms adds them)")
        norms = np.asarray(record["class_weight_norms"], np.float64)[classes]
        z.append((norms - norms.mean()) / norms.std())
    # A point's outcome times its class's standardized norm, per seed.
    weighted = np.stack(z)[:, index] * correct
    groups = np.eye(len(classes))[index]

    def statistic(seed_weights: np.ndarray, point_weights: np.ndarray) -> np.ndarray:
        sums = _group_sums(weighted, groups, seed_weights, point_weights)  # (B, classes)
        counts = point_weights @ groups
        per_class = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        return scale * np.mean(per_class, axis=1) / np.sum(seed_weights, axis=1)

    return statistic
