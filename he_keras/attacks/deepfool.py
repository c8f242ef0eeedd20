"""DeepFool (Moosavi-Dezfooli et al., 2016), batched, L-inf and L2.

"DeepFool: a simple and accurate method to fool deep neural networks"
(CVPR 2016, https://arxiv.org/abs/1511.04599). A minimal-norm attack: at each
iteration it linearizes the differences `f_k = z_k - z_y` between the logits
of the `n_candidates` classes with the highest clean logits and the true
class, steps to the closest linearized boundary,

- L2: `r = (|f_k| + 1e-4) / ||w_k||_2^2 * w_k`,
- L-inf: `r = (|f_k| + 1e-4) / ||w_k||_1 * sign(w_k)`,

with `w_k = grad f_k` and `k` the candidate minimizing `|f_k| / ||w_k||_*`
(dual norm), and stops per example once it is misclassified. The total
perturbation is scaled by `1 + overshoot`. The per-class input gradients of a
batch come from one `batch_jacobian` per iteration inside a `tf.function`.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from he_keras.attacks.base import (
    Attack,
    batch_mask,
    check_int,
    logits_of,
    minimal_norm_output,
    predict,
    require,
)
from he_keras.attacks.core import validate_attack_params


class DeepFool(Attack):
    """Batched DeepFool in the L-inf or L2 norm.

    A minimal-norm attack: it returns the point it found projected onto the
    eps-ball ∩ [0, 1], and `last_norms` holds the norm of the perturbation it
    found per example (robust at eps if that norm is > eps). It is
    deterministic, so it takes no seed.

    Args:
        eps: Radius of the threat model the output is projected on.
        norm: `"linf"` or `"l2"`, the norm minimized and of the threat model.
        max_iter: Maximum iterations (the ART default, 100).
        overshoot: Relative overshoot of the total perturbation.
        n_candidates: Classes with the highest clean logits considered as
            targets (the true class included).

    Attributes:
        last_norms: Per-example norm of the found perturbation, inf where no
            adversarial point was found (0 where the clean input is already
            misclassified).

    Example:

    ```python
    attack = DeepFool(eps=0.1, norm="linf")
    x_adv = attack(model, x, y)
    minimal = attack.last_norms
    ```
    """

    name = "deepfool"

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        max_iter: int = 100,
        overshoot: float = 0.02,
        n_candidates: int = 10,
    ) -> None:
        validate_attack_params(eps=eps, norm=norm)
        self.max_iter = check_int("max_iter", max_iter)
        require(overshoot >= 0.0, "overshoot", overshoot, ">= 0")
        self.n_candidates = check_int("n_candidates", n_candidates, minimum=2)
        self.eps = float(eps)
        self.norm = norm
        self.overshoot = float(overshoot)
        self.last_norms = None
        self._compile(self._run)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "max_iter": self.max_iter,
            "overshoot": self.overshoot,
            "n_candidates": self.n_candidates,
        }

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        x_found, found = self._run_compiled(model, x, y)
        x_adv, self.last_norms = minimal_norm_output(x, x_found, found, self.eps, self.norm)
        return x_adv

    def _step(self, f: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        """Step to the closest linearized boundary; `f` (B, K), `w` (B, K, d)."""
        if self.norm == "linf":
            dual = tf.reduce_sum(tf.abs(w), axis=-1)
        else:
            dual = tf.norm(w, axis=-1)
        distance = tf.abs(f) / (dual + 1e-12)
        best = tf.argmin(distance, axis=-1, output_type=tf.int32)
        f_best = tf.gather(f, best, batch_dims=1)
        w_best = tf.gather(w, best, batch_dims=1)
        dual_best = tf.gather(dual, best, batch_dims=1)
        if self.norm == "linf":
            direction = tf.sign(w_best)
            scale = (tf.abs(f_best) + 1e-4) / (dual_best + 1e-12)
        else:
            direction = w_best
            scale = (tf.abs(f_best) + 1e-4) / (tf.square(dual_best) + 1e-12)
        return scale[:, None] * direction

    def _run(
        self, model: Callable, x: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        logits = logits_of(model, x)
        k = min(self.n_candidates, logits.shape[-1])
        candidates = tf.math.top_k(logits, k=k).indices
        is_true = tf.equal(candidates, y[:, None])
        r_total = tf.zeros_like(tf.reshape(x, [tf.shape(x)[0], -1]))
        x_adv = x
        active = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y)
        i = tf.constant(0)
        while i < self.max_iter and tf.reduce_any(active):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                z = logits_of(model, x_adv)
                z_true = tf.gather(z, y, batch_dims=1)
                f = tf.gather(z, candidates, batch_dims=1) - z_true[:, None]
            w = tf.reshape(tape.batch_jacobian(f, x_adv), tf.concat([tf.shape(f), [-1]], 0))
            correct = tf.equal(tf.argmax(z, -1, output_type=tf.int32), y)
            active = tf.logical_and(active, correct)
            # The true class is no target: its distance becomes infinite.
            f = tf.where(is_true, float("inf"), f)
            r = self._step(f, w)
            r_total += tf.where(active[:, None], r, 0.0)
            delta = tf.reshape((1.0 + self.overshoot) * r_total, tf.shape(x))
            x_new = tf.clip_by_value(x + delta, 0.0, 1.0)
            x_adv = tf.where(batch_mask(active, x), x_new, x_adv)
            i += 1
        return x_adv, tf.not_equal(predict(model, x_adv), y)
