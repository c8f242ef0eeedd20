"""RayS: hard-label ray search for the L-inf decision boundary.

Chen & Gu, "RayS: a ray searching method for hard-label adversarial attack"
(KDD 2020, https://arxiv.org/abs/2006.12792). It uses only predicted labels
and no loss: it searches sign directions `s` in {-1, +1}^d and, along each,
binary-searches (tolerance 1e-3 in units of the L2-normalized direction) the
radius at which the label flips. Candidate directions flip the sign of one
block of the current best direction: first the whole vector, then halves,
quarters, ... (blocks of the flattened input, coarse to fine, down to single
coordinates). A candidate is searched only if it is adversarial within the
best radius so far, so most candidates cost one query. The search is
deterministic given the direction, so an example stops once a full pass of
single-coordinate flips found nothing closer (it could never improve again).

The L-inf distance of the boundary point from the input is the robustness
certificate an attack can give without gradients; its mean over correctly
classified points is the ADBD (`adbd`). Being hard-label, RayS's robust
accuracy is an upper bound, usually above the white-box numbers.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from he_keras.attacks.base import Attack, check_int, minimal_norm_output, predict
from he_keras.attacks.core import make_generator, validate_attack_params

# Binary-search tolerance of the radius (unit-L2 direction), as in RayS.
SEARCH_TOLERANCE = 1e-3


def adbd(distances: Any) -> float:
    """Average decision-boundary distance over the attacked points.

    Args:
        distances: Per-example boundary distances (`RayS.last_distances`);
            0 marks clean-misclassified points, which are left out.

    Returns:
        The mean distance over the points with a positive distance (inf if
        RayS found no boundary for one of them, NaN if there are none).

    Example:

    >>> adbd([0.0, 0.1, 0.3])
    0.2
    """
    distances = np.asarray(distances, dtype=np.float64).reshape(-1)
    positive = distances[distances > 0.0]
    return float(positive.mean()) if positive.size else float("nan")


class RayS(Attack):
    """Hard-label RayS attack in the L-inf norm.

    Returns per example the boundary point found projected onto the eps-ball
    ∩ [0, 1] (the clean input where none was found). Only the argmax of the
    model is used.

    Args:
        eps: Radius of the L-inf threat model in pixel units.
        query_limit: Queries per example (the RayS leaderboard uses 40000,
            its default is 10000).
        early_stopping: Stop searching an example once its boundary distance
            is <= eps (robust accuracy); False searches on for the ADBD.
        seed: None starts every example from the all-ones direction, as the
            reference does; an int draws a random sign vector per example.

    Attributes:
        last_distances: Per-example L-inf distance of the boundary point found
            (0 for clean-misclassified inputs, inf where none was found).
        last_queries: Queries spent per example (int32).

    Example:

    ```python
    attack = RayS(eps=8 / 255, query_limit=10000, early_stopping=False)
    x_adv = attack(model, x, y)
    print(adbd(attack.last_distances))
    ```
    """

    name = "rays"
    norm = "linf"

    def __init__(
        self,
        eps: float,
        query_limit: int = 10000,
        early_stopping: bool = True,
        seed: Optional[int] = None,
    ) -> None:
        validate_attack_params(eps=eps, norm="linf")
        self.query_limit = check_int("query_limit", query_limit)
        self.eps = float(eps)
        self.early_stopping = bool(early_stopping)
        self.seed = seed
        self.rng = None if seed is None else make_generator(seed)
        self.last_distances = None
        self.last_queries = None
        self._compile(self._run)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "query_limit": self.query_limit,
            "early_stopping": self.early_stopping,
            "tolerance": SEARCH_TOLERANCE,
            "seed": self.seed,
        }

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        x_found, found, queries = self._run_compiled(model, x, y)
        x_adv, self.last_distances = minimal_norm_output(
            x, x_found, found, self.eps, "linf"
        )
        self.last_queries = queries
        return x_adv

    def _start_direction(self, flat: tf.Tensor) -> tf.Tensor:
        if self.rng is None:
            return tf.ones_like(flat)
        return tf.sign(self.rng.uniform(tf.shape(flat)) - 0.5)

    def _run(
        self, model: Callable, x: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        batch = tf.shape(x)[0]
        flat_x = tf.reshape(x, [batch, -1])
        dims = int(np.prod(x.shape[1:]))
        max_level = math.ceil(math.log2(dims))
        position = tf.range(dims)[None, :]

        def point(direction, radius):
            unit = direction / math.sqrt(dims)
            return tf.clip_by_value(flat_x + radius[:, None] * unit, 0.0, 1.0)

        def adversarial(flat_points, mask):
            points = tf.reshape(flat_points, tf.shape(x))
            return tf.logical_and(mask, tf.not_equal(predict(model, points), y))

        sign = self._start_direction(flat_x)
        misclassified = adversarial(flat_x, tf.ones([batch], tf.bool))
        radius = tf.where(misclassified, 0.0, float("inf"))
        best = flat_x
        queries = tf.zeros([batch], tf.int32)
        # Consecutive single-coordinate flips that found nothing closer.
        unchanged = tf.zeros([batch], tf.int32)
        level = tf.constant(0)
        block = tf.constant(0)

        def searching(radius, best, queries, unchanged):
            active = tf.logical_not(misclassified)
            active = tf.logical_and(active, queries < self.query_limit)
            active = tf.logical_and(active, unchanged < dims)
            if self.early_stopping:
                distance = tf.reduce_max(tf.abs(best - flat_x), axis=-1)
                within = tf.logical_and(tf.math.is_finite(radius), distance <= self.eps)
                active = tf.logical_and(active, tf.logical_not(within))
            return active

        active = searching(radius, best, queries, unchanged)
        while tf.reduce_any(active):
            blocks = tf.bitwise.left_shift(1, level)
            size = (dims + blocks - 1) // blocks
            start = block * size
            end = tf.minimum(dims, start + size)
            flip = tf.logical_and(position >= start, position < end)
            attempt = tf.where(tf.logical_and(flip, active[:, None]), -sign, sign)

            # One query at the current radius decides whether to search.
            improves = adversarial(point(attempt, radius), active)
            queries += tf.cast(active, tf.int32)
            low = tf.zeros_like(radius)
            high = tf.where(improves, tf.minimum(radius, math.sqrt(dims)), radius)
            pending = improves
            while tf.reduce_any(pending):
                middle = (low + high) / 2.0
                hit = adversarial(point(attempt, middle), pending)
                queries += tf.cast(pending, tf.int32)
                high = tf.where(hit, middle, high)
                low = tf.where(tf.logical_and(pending, tf.logical_not(hit)), middle, low)
                pending = tf.logical_and(pending, high - low > SEARCH_TOLERANCE)

            closer = high < radius
            best = tf.where(closer[:, None], point(attempt, high), best)
            sign = tf.where(closer[:, None], attempt, sign)
            radius = tf.where(closer, high, radius)
            finest = tf.equal(level, max_level)
            unchanged = tf.where(closer, 0, unchanged + tf.cast(finest, tf.int32))

            block += 1
            next_level = tf.logical_or(tf.equal(block, blocks), tf.equal(end, dims))
            level = tf.where(next_level, tf.minimum(level + 1, max_level), level)
            block = tf.where(next_level, 0, block)
            active = searching(radius, best, queries, unchanged)
        found = tf.math.is_finite(radius)
        return tf.reshape(best, tf.shape(x)), found, queries
