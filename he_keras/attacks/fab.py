"""Targeted FAB (FAB-T), L-inf, of Croce & Hein (2020).

"Minimally distorted adversarial examples with a fast adaptive boundary
attack" (ICML 2020, https://arxiv.org/abs/1907.02044); FAB-T is the third
attack of AutoAttack. A minimal-norm attack: at iterate `x_k` it linearizes
the boundary between the true class `y` and the target `t`,
`f(x) = z_t(x) - z_y(x) ~ f(x_k) + w^T (x - x_k)`, and projects both `x_k`
and the clean `x` onto that hyperplane within the box [0, 1] (minimal L-inf
displacement, `d_k` and `d_0`). The next iterate mixes the two, biased toward
the clean point and extrapolated by `eta`:

    alpha = min(||d_k|| / (||d_k|| + ||d_0||), alpha_max)
    x_{k+1} = clip((1 - alpha)(x_k + eta d_k) + alpha (x + eta d_0), 0, 1)

When `x_{k+1}` is misclassified it is recorded if closer than the best so
far, and the iterate moves back toward `x`: `x + beta (x_{k+1} - x)`. Targets
are the classes with the 2nd..(n+1)-th highest clean logits; a target only
runs on examples not yet broken within eps (an example counts as broken only
if its minimal norm is <= eps, as in AutoAttack). Restarts after the first
start from `x + eps / 2 * u / ||u||_inf`, `u` uniform in [-1, 1]^d.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from he_keras.attacks.base import (
    Attack,
    batch_mask,
    check_int,
    check_target_classes,
    logits_of,
    minimal_norm_output,
    perturbation_norm,
    predict,
    ranked_class,
    require,
)
from he_keras.attacks.core import graph_ready, loop_step, make_generator, validate_attack_params


def linf_hyperplane_projection(
    points: tf.Tensor, w: tf.Tensor, b: tf.Tensor
) -> tf.Tensor:
    """Smallest L-inf displacement onto a hyperplane within the box [0, 1].

    Solves `min ||d||_inf` subject to `w . (p + d) = b` and `0 <= p + d <= 1`
    per row. With `c = b - w . p` the optimum moves every coordinate toward
    `sign(c w_i)` by `min(t, room_i)`, `room_i` the distance to the box face
    in that direction; `g(t) = sum_i |w_i| min(t, room_i)` is piecewise
    linear and increasing, and `t` solves `g(t) = |c|` (found after sorting
    the rooms). If the hyperplane does not meet the box, every coordinate
    moves to its face (the closest the box gets to the hyperplane).

    Args:
        points: Points `p`, shape `(n, d)`, in [0, 1].
        w: Normals, shape `(n, d)`.
        b: Offsets, shape `(n,)`.

    Returns:
        Displacements `d`, shape `(n, d)`.

    Example:

    >>> p = tf.constant([[0.5, 0.5]])
    >>> linf_hyperplane_projection(p, tf.constant([[1.0, 1.0]]), tf.constant([1.5]))
    <tf.Tensor: shape=(1, 2), dtype=float32, numpy=array([[0.25, 0.25]], dtype=float32)>
    """
    c = b - tf.reduce_sum(w * points, axis=-1)
    toward = tf.sign(c)[:, None] * tf.sign(w)
    room = tf.where(toward > 0, 1.0 - points, points)
    weight = tf.abs(w)
    order = tf.argsort(room, axis=-1)
    room_sorted = tf.gather(room, order, batch_dims=1)
    weight_sorted = tf.gather(weight, order, batch_dims=1)
    # g(t) = saturated[k] + t * free[k] for t between the k-1-th and k-th room.
    saturated = tf.cumsum(weight_sorted * room_sorted, axis=-1, exclusive=True)
    free = tf.cumsum(weight_sorted, axis=-1, reverse=True)
    g_at_rooms = saturated + room_sorted * free
    target = tf.abs(c)[:, None]
    k = tf.reduce_sum(tf.cast(g_at_rooms < target, tf.int32), axis=-1)
    dims = tf.shape(points)[-1]
    k_safe = tf.minimum(k, dims - 1)
    t = (tf.abs(c) - tf.gather(saturated, k_safe, batch_dims=1)) / tf.maximum(
        tf.gather(free, k_safe, batch_dims=1), 1e-12
    )
    t = tf.where(k >= dims, float("inf"), t)
    return toward * tf.minimum(t[:, None], room)


class FABTargeted(Attack):
    """FAB-T: the targeted, L-inf Fast Adaptive Boundary attack.

    A minimal-norm attack: returns the closest adversarial point found,
    projected onto the eps-ball ∩ [0, 1], and `last_norms` holds its L-inf
    norm per example (the minimum over the targets and restarts tried; each is
    tried only on examples not yet broken within eps). AutoAttack's FAB-T
    runs one restart per target, without random start.

    Args:
        eps: Radius of the L-inf threat model in pixel units.
        steps: Iterations per target (AutoAttack: 100).
        n_target_classes: Number of targets (AutoAttack: 9); at most
            `classes - 1`.
        alpha_max: Largest weight of the clean point in a step.
        eta: Extrapolation factor of the projections (>= 1).
        beta: Factor of the step back toward the clean point after a success.
        restarts: Runs per target; all but the first from a random start.
        seed: Seed of the random starts.

    Attributes:
        last_norms: Per-example L-inf norm of the closest adversarial point
            found, inf where none was found.

    Example:

    ```python
    attack = FABTargeted(eps=8 / 255, steps=100, n_target_classes=9)
    x_adv = attack(model, x, y)
    ```
    """

    name = "fab-t"
    norm = "linf"

    def __init__(
        self,
        eps: float,
        steps: int = 100,
        n_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        restarts: int = 1,
        seed: Optional[int] = None,
    ) -> None:
        validate_attack_params(eps=eps, steps=steps, norm="linf")
        self.n_target_classes = check_int("n_target_classes", n_target_classes)
        require(0.0 <= alpha_max < 1.0, "alpha_max", alpha_max, "in [0, 1)")
        require(eta >= 1.0, "eta", eta, ">= 1")
        require(0.0 < beta <= 1.0, "beta", beta, "in (0, 1]")
        self.eps = float(eps)
        self.steps = int(steps)
        self.alpha_max = float(alpha_max)
        self.eta = float(eta)
        self.beta = float(beta)
        self.restarts = check_int("restarts", restarts)
        self.seed = seed
        self.rng = make_generator(seed)
        self.last_norms = None
        self._compile(self._run)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "steps": self.steps,
            "n_target_classes": self.n_target_classes,
            "alpha_max": self.alpha_max,
            "eta": self.eta,
            "beta": self.beta,
            "restarts": self.restarts,
            "seed": self.seed,
        }

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Runs FAB toward each target class (and restart) in turn.

        Raises:
            ValueError: If the model has fewer than `n_target_classes + 1`
                classes.
        """
        logits = logits_of(model, x)
        check_target_classes(logits.shape[-1], self.n_target_classes, minimum=2)
        misclassified = tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), y)
        x_found = x
        best = tf.where(misclassified, 0.0, float("inf"))
        runs = [
            (rank, restart > 0)
            for rank in range(2, self.n_target_classes + 2)
            for restart in range(self.restarts)
        ]
        for rank, random_start in runs:
            index = tf.where(best > self.eps)
            if index.shape[0] == 0:
                break
            run_x, run_norm = self._run_compiled(
                model,
                tf.gather_nd(x, index),
                tf.gather_nd(y, index),
                tf.gather_nd(ranked_class(logits, rank), index),
                static=(random_start,),
            )
            closer = run_norm < tf.gather_nd(best, index)
            closer_index = tf.boolean_mask(index, closer)
            x_found = tf.tensor_scatter_nd_update(
                x_found, closer_index, tf.boolean_mask(run_x, closer)
            )
            best = tf.tensor_scatter_nd_update(
                best, closer_index, tf.boolean_mask(run_norm, closer)
            )
        x_adv, self.last_norms = minimal_norm_output(
            x, x_found, tf.math.is_finite(best), self.eps, "linf"
        )
        return x_adv

    def _run(
        self,
        model: Callable,
        x: tf.Tensor,
        y: tf.Tensor,
        target: tf.Tensor,
        random_start: bool,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One FAB-T run toward `target`; returns (closest adversarial, norm)."""
        flat_x = tf.reshape(x, [tf.shape(x)[0], -1])
        x_k = x
        if random_start:
            u = self.rng.uniform(tf.shape(x), -1.0, 1.0)
            u = u / batch_mask(tf.maximum(perturbation_norm(u, "linf"), 1e-12), x)
            x_k = tf.clip_by_value(x + 0.5 * self.eps * u, 0.0, 1.0)
        adv = x
        best = tf.fill([tf.shape(x)[0]], float("inf"))
        model = graph_ready(model)

        @loop_step
        def margin_and_grad(x_k):
            with tf.GradientTape() as tape:
                tape.watch(x_k)
                logits = logits_of(model, x_k)
                f = tf.gather(logits, target, batch_dims=1)
                f -= tf.gather(logits, y, batch_dims=1)
            return f, tape.gradient(f, x_k)

        for _ in tf.range(self.steps):
            f, grad = margin_and_grad(x_k)
            w = tf.reshape(grad, tf.shape(flat_x))
            flat_k = tf.reshape(x_k, tf.shape(flat_x))
            b = tf.reduce_sum(w * flat_k, axis=-1) - f
            d = linf_hyperplane_projection(
                tf.concat([flat_k, flat_x], 0), tf.concat([w, w], 0), tf.concat([b, b], 0)
            )
            d_k, d_0 = tf.split(d, 2)
            norm_k = tf.maximum(perturbation_norm(d_k, "linf"), 1e-8)
            norm_0 = tf.maximum(perturbation_norm(d_0, "linf"), 1e-8)
            alpha = tf.clip_by_value(norm_k / (norm_k + norm_0), 0.0, self.alpha_max)
            alpha = alpha[:, None]
            step = (1.0 - alpha) * (flat_k + self.eta * d_k)
            step += alpha * (flat_x + self.eta * d_0)
            x_k = tf.reshape(tf.clip_by_value(step, 0.0, 1.0), tf.shape(x))
            hit = tf.not_equal(predict(model, x_k), y)
            distance = perturbation_norm(x_k - x, "linf")
            closer = tf.logical_and(hit, distance < best)
            adv = tf.where(batch_mask(closer, x), x_k, adv)
            best = tf.where(closer, distance, best)
            x_k = tf.where(batch_mask(hit, x), x + self.beta * (x_k - x), x_k)
        return adv, best
