"""Carlini-Wagner attacks: the L2 optimization attack and CW-L-inf (PGD).

`CarliniWagnerL2` is Carlini & Wagner, "Towards evaluating the robustness of
neural networks" (IEEE S&P 2017, https://arxiv.org/abs/1608.04644): with the
change of variables `x' = (tanh(w) + 1) / 2` (always in [0, 1]) it minimizes

    ||x' - x||_2^2 + c * max(z_y(x') - max_{j!=y} z_j(x') + kappa, 0)

with Adam, and binary-searches the constant `c` per example (halving the
bracket after a success, otherwise bisecting or multiplying `c` by 10 while
no success bounds it). It is written here, batched, because the cleverhans
4.0.0 version gives the constant the image shape (fails for batches > 1,
cleverhans#1205) and turns a true label into a targeted attack (#1228).

`CWLinf` is the CW-L-inf attack of TRADES/HE-style tables: PGD maximizing
the CW margin `max_{j!=y} z_j - z_y` instead of the cross-entropy.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from he_keras import losses
from he_keras.attacks.adaptive import PGDRestarts
from he_keras.attacks.base import (
    Attack,
    batch_mask,
    check_int,
    logits_of,
    minimal_norm_output,
    require,
)
from he_keras.attacks.core import graph_ready, loop_step, validate_attack_params

_ADAM_BETA_1 = 0.9
_ADAM_BETA_2 = 0.999
_ADAM_EPSILON = 1e-8
# Upper end of the constant's bracket while no success has bounded it.
_NO_UPPER_BOUND = 1e10


class CarliniWagnerL2(Attack):
    """Batched Carlini-Wagner L2 attack with a per-example binary search.

    A minimal-norm attack: it returns the smallest-L2 adversarial point found
    per example, projected onto the eps-ball ∩ [0, 1] of the threat model,
    and `last_norms` holds that point's distance (in the threat model's norm)
    from the clean input. The whole optimization (binary search and Adam
    steps) is one `tf.function`. It is deterministic (it starts from the
    clean input), so the seed is only recorded.

    Args:
        eps: Radius of the threat model the output is projected on.
        steps: Adam steps per binary-search step (the paper: up to 10000,
            cleverhans: 1000).
        binary_search_steps: Binary-search steps on the constant `c`.
        lr: Adam learning rate in tanh space.
        initial_const: Initial constant `c`.
        confidence: The margin `kappa` by which the output must be
            misclassified.
        norm: Norm of the threat model (`"l2"` or `"linf"`); the attack
            always minimizes the L2 distance.
        seed: Recorded in the config (the attack draws no noise).

    Attributes:
        last_norms: Per-example `norm` of the found perturbation, inf where
            none was found.

    Example:

    ```python
    attack = CarliniWagnerL2(eps=0.5, steps=1000, binary_search_steps=9)
    x_adv = attack(model, x, y)
    ```
    """

    name = "cw-l2"

    def __init__(
        self,
        eps: float,
        steps: int = 1000,
        binary_search_steps: int = 9,
        lr: float = 0.01,
        initial_const: float = 1e-3,
        confidence: float = 0.0,
        norm: str = "l2",
        seed: Optional[int] = None,
    ) -> None:
        validate_attack_params(eps=eps, steps=steps, norm=norm)
        self.binary_search_steps = check_int("binary_search_steps", binary_search_steps)
        require(lr > 0.0, "lr", lr, "> 0")
        require(initial_const > 0.0, "initial_const", initial_const, "> 0")
        require(confidence >= 0.0, "confidence", confidence, ">= 0")
        self.eps = float(eps)
        self.steps = int(steps)
        self.lr = float(lr)
        self.initial_const = float(initial_const)
        self.confidence = float(confidence)
        self.norm = norm
        self.seed = seed
        self.last_norms = None
        self._compile(self._run)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "steps": self.steps,
            "binary_search_steps": self.binary_search_steps,
            "lr": self.lr,
            "initial_const": self.initial_const,
            "confidence": self.confidence,
            "seed": self.seed,
        }

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        x_found, found = self._run_compiled(model, x, y)
        x_adv, self.last_norms = minimal_norm_output(x, x_found, found, self.eps, self.norm)
        return x_adv

    def _run(
        self, model: Callable, x: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        w_start = tf.atanh((2.0 * x - 1.0) * 0.999999)
        batch = tf.shape(y)
        lower = tf.zeros(batch)
        upper = tf.fill(batch, _NO_UPPER_BOUND)
        const = tf.fill(batch, self.initial_const)
        best_l2 = tf.fill(batch, float("inf"))
        best_adv = x
        model = graph_ready(model)

        @loop_step
        def loss_and_grad(w, const):
            with tf.GradientTape() as tape:
                tape.watch(w)
                x_new = (tf.tanh(w) + 1.0) / 2.0
                l2 = tf.reduce_sum(tf.square(x_new - x), axis=tf.range(1, tf.rank(x)))
                margin = losses.cw_margin(y, logits_of(model, x_new), float("inf"))
                loss = l2 + const * tf.nn.relu(self.confidence - margin)
            return x_new, l2, margin, tape.gradient(loss, w)

        for _ in tf.range(self.binary_search_steps):
            w = w_start
            m = tf.zeros_like(x)
            v = tf.zeros_like(x)
            succeeded = tf.zeros(batch, tf.bool)
            for t in tf.range(1, self.steps + 1):
                x_new, l2, margin, grad = loss_and_grad(w, const)
                success = margin > self.confidence
                succeeded = tf.logical_or(succeeded, success)
                closer = tf.logical_and(success, l2 < best_l2)
                best_l2 = tf.where(closer, l2, best_l2)
                best_adv = tf.where(batch_mask(closer, x), x_new, best_adv)
                m = _ADAM_BETA_1 * m + (1.0 - _ADAM_BETA_1) * grad
                v = _ADAM_BETA_2 * v + (1.0 - _ADAM_BETA_2) * tf.square(grad)
                t_float = tf.cast(t, tf.float32)
                m_hat = m / (1.0 - _ADAM_BETA_1**t_float)
                v_hat = v / (1.0 - _ADAM_BETA_2**t_float)
                w = w - self.lr * m_hat / (tf.sqrt(v_hat) + _ADAM_EPSILON)
            upper = tf.where(succeeded, tf.minimum(upper, const), upper)
            lower = tf.where(succeeded, lower, tf.maximum(lower, const))
            bounded = upper < _NO_UPPER_BOUND
            const = tf.where(bounded, (lower + upper) / 2.0, const * 10.0)
        return best_adv, tf.math.is_finite(best_l2)


class CWLinf(PGDRestarts):
    """CW-L-inf: PGD on the Carlini-Wagner margin, per-example worst case.

    Maximizes `min(max_{j!=y} z_j - z_y, kappa)` with uniform random starts
    (`kappa=None`: no cap). The margin is invariant to a shift of the logits,
    and its sign-gradient steps to a positive rescaling.

    Args:
        eps: Radius of the threat model in pixel units.
        step_size: Step size.
        steps: Steps per restart.
        kappa: Optional cap of the margin (TRADES evaluations use 50).
        restarts: Random restarts.
        norm: `"linf"` or `"l2"`.
        seed: Seed of the random starts.

    Example:

    ```python
    attack = CWLinf(eps=8 / 255, step_size=2 / 255, steps=30, seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int,
        kappa: Optional[float] = None,
        restarts: int = 1,
        norm: str = "linf",
        seed: Optional[int] = None,
    ) -> None:
        if kappa is not None:
            require(kappa >= 0.0, "kappa", kappa, ">= 0 or None")
        cap = float("inf") if kappa is None else float(kappa)
        super().__init__(
            eps,
            step_size,
            steps,
            restarts=restarts,
            norm=norm,
            objective="cw",
            objective_params={"kappa": cap},
            seed=seed,
        )
        self.kappa = None if kappa is None else float(kappa)
        self.objective_params = {"kappa": self.kappa}
        self.name = "cw-linf" if norm == "linf" else "cw-l2-pgd"
