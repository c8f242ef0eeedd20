"""Square attack (L-inf), as ported to AutoAttack, score-based.

"Square Attack: a query-efficient black-box adversarial attack via random
search" (Andriushchenko et al., ECCV 2020, https://arxiv.org/abs/1912.00049),
the black-box member of AutoAttack. It uses only the logits (never
gradients), so a model that masks its gradients does not fool it.

This follows AutoAttack's port (`fra31/auto-attack`, `autoattack/square.py`,
the version RobustBench's numbers come from), not the authors' original code
(which draws one window per image, redraws its values until they change the
image and caps the side at `h - 1`):

- start from vertical stripes `x + eps * s`, `s` = +-1 per image, column and
  channel, clipped to [0, 1]; one query;
- at iteration `i = 0, 1, ..., n_queries - 1` draw ONE square window for the
  whole batch: side `max(round(sqrt(p_i * h * w)), 1)`, top-left corner
  `floor(U * (h - side))`, `floor(U * (w - side))` (so never at `h - side`),
  and one sign per channel; each still-robust image gets the candidate
  `x_best + 2 * eps * sign` on the window, projected onto the eps-ball and
  [0, 1], and keeps it if its margin `z_y - max_{j != y} z_j` decreased;
- `p_i` is `p_init` divided by 2, 4, ..., 512 once `i` exceeds 10, 50, 200,
  500, 1000, 2000, 4000, 6000 and 8000 (AutoAttack's standard version does
  not rescale the schedule to `n_queries`).

Only images the model still classifies correctly are queried, and the search
stops once all are misclassified. Images must be NHWC.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import tensorflow as tf

from he_keras.attacks.adaptive import boundary_margin
from he_keras.attacks.base import Attack, batch_mask, check_int, require
from he_keras.attacks.core import make_generator, project, validate_attack_params

# Iterations after which the window fraction p is halved again.
P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_sides(p_init: float, height: int, width: int) -> list[int]:
    """The window side after 0, 1, ..., 9 halvings of `p_init`.

    Args:
        p_init: Initial fraction of pixels in the window.
        height: Image height.
        width: Image width.

    Returns:
        `max(round(sqrt(p * height * width)), 1)` for `p = p_init / 2**k`,
        `k = 0, ..., len(P_SCHEDULE)` (Python rounding, as AutoAttack), capped
        at the shorter side so the window stays square and inside a
        non-square image (AutoAttack assumes square images, where the cap
        never binds).
    """
    return [
        min(max(int(round(math.sqrt(p_init / 2**k * height * width))), 1), height, width)
        for k in range(len(P_SCHEDULE) + 1)
    ]


def _margin(model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Margin `z_y - max_{j!=y} z_j`; negative exactly when misclassified."""
    return -boundary_margin(model, x, y)


class Square(Attack):
    """L-inf Square attack with the margin loss, as AutoAttack runs it.

    Returns per image the adversarial point found, else the lowest-margin
    one. Images must be NHWC.

    Args:
        eps: Radius of the L-inf threat model in pixel units.
        n_queries: Iterations of the random search (AutoAttack: 5000); with
            the initial stripes an image is queried at most `n_queries + 1`
            times.
        p_init: Initial fraction of pixels in the window (AutoAttack: 0.8).
        seed: Seed of the random search.

    Attributes:
        last_queries: Queries spent per image by the last call (int32).

    Example:

    ```python
    attack = Square(eps=8 / 255, n_queries=5000, seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    name = "square"
    norm = "linf"

    def __init__(
        self,
        eps: float,
        n_queries: int = 5000,
        p_init: float = 0.8,
        seed: Optional[int] = None,
    ) -> None:
        validate_attack_params(eps=eps, norm="linf")
        self.n_queries = check_int("n_queries", n_queries)
        require(0.0 < p_init <= 1.0, "p_init", p_init, "in (0, 1]")
        self.eps = float(eps)
        self.p_init = float(p_init)
        self.seed = seed
        self.rng = make_generator(seed)
        self.last_queries = None
        self._compile(self._run)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "n_queries": self.n_queries,
            "p_init": self.p_init,
            "loss": "margin",
            "p_schedule": "halved after iterations 10, 50, ..., 8000, not rescaled",
            "window": "one position and sign per channel per iteration, shared by the "
            "batch (AutoAttack's port)",
            "seed": self.seed,
        }

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if len(x.shape) != 4:
            raise ValueError(
                f"Square needs NHWC images (rank 4). Received: shape={x.shape}"
            )
        x_adv, queries = self._run_compiled(model, x, y)
        self.last_queries = queries
        return x_adv

    def _propose(self, x: tf.Tensor, x_best: tf.Tensor, i: tf.Tensor) -> tf.Tensor:
        """Candidates at iteration `i`: one window and signs for the batch.

        Args:
            x: Clean images, NHWC.
            x_best: Current points, same shape.
            i: The iteration (0-based), which sets the window side.

        Returns:
            `x_best + 2 * eps * sign` on the window, projected onto the
            eps-ball around `x` and [0, 1].
        """
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        halvings = tf.reduce_sum(tf.cast(i > tf.constant(P_SCHEDULE), tf.int32))
        side = tf.gather(tf.constant(window_sides(self.p_init, h, w)), halvings)
        top = self._random_int(h - side)
        left = self._random_int(w - side)
        rows = tf.range(h)
        cols = tf.range(w)
        in_rows = tf.logical_and(rows >= top, rows < top + side)
        in_cols = tf.logical_and(cols >= left, cols < left + side)
        window = tf.logical_and(in_rows[:, None, None], in_cols[None, :, None])
        signs = tf.sign(2.0 * self.rng.uniform([1, 1, c]) - 1.0)
        delta = tf.where(window, 2.0 * self.eps * signs, 0.0)
        return tf.clip_by_value(x + project(x_best + delta - x, self.eps, "linf"), 0.0, 1.0)

    def _random_int(self, high: tf.Tensor) -> tf.Tensor:
        """`floor(U * high)`: uniform in [0, high) for high > 0, else 0."""
        return tf.cast(self.rng.uniform([]) * tf.cast(high, tf.float32), tf.int32)

    def _run(
        self, model: Callable, x: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        batch, width, channels = tf.shape(x)[0], x.shape[2], x.shape[3]
        stripes = tf.sign(self.rng.uniform([batch, 1, width, channels]) - 0.5)
        x_best = tf.clip_by_value(x + self.eps * stripes, 0.0, 1.0)
        margin = _margin(model, x_best, y)
        queries = tf.ones([batch], tf.int32)
        i = tf.constant(0)
        while i < self.n_queries and tf.reduce_any(margin > 0.0):
            index = tf.where(margin > 0.0)
            x_sub = tf.gather_nd(x, index)
            y_sub = tf.gather_nd(y, index)
            best_sub = tf.gather_nd(x_best, index)
            candidate = self._propose(x_sub, best_sub, i)
            new_margin = _margin(model, candidate, y_sub)
            improved = new_margin < tf.gather_nd(margin, index)
            kept = tf.where(batch_mask(improved, candidate), candidate, best_sub)
            x_best = tf.tensor_scatter_nd_update(x_best, index, kept)
            margin = tf.tensor_scatter_nd_update(
                margin, index, tf.minimum(new_margin, tf.gather_nd(margin, index))
            )
            queries = tf.tensor_scatter_nd_add(queries, index, tf.ones_like(y_sub))
            i += 1
        return x_best, queries
