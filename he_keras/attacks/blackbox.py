"""Score-based black-box attacks: NES and ZOO (forward passes only).

Gradient-masking probes: they estimate the gradient from finite differences
of the model's outputs, so obfuscated gradients do not stop them. Neither
ever differentiates through the model.

- NES (Ilyas et al., "Black-box adversarial attacks with limited queries and
  information", ICML 2018, https://arxiv.org/abs/1804.08598): antithetic
  Gaussian estimate `g = 1/(n sigma) sum_i [L(x + sigma u_i) - L(x - sigma u_i)] u_i`
  over `n/2` pairs `u_i ~ N(0, I)` of the margin loss
  `L = max_{j!=y} z_j - z_y`, followed by an L-inf PGD step
  `x <- P(x + step_size * sign(g))`.
- ZOO (Chen et al., "ZOO: zeroth order optimization based black-box attacks",
  AISec 2017, https://arxiv.org/abs/1708.03999): symmetric finite
  differences `(f(x + h e_i) - f(x - h e_i)) / 2h` on `coords_per_step`
  random coordinates per step, each updated by its own Adam (per-coordinate
  step counts), minimizing the CW loss of log-probabilities
  `max(log p_y - max_{j!=y} log p_j, -kappa)`, then projected onto the
  eps-ball ∩ [0, 1]. Dimension reduction and importance sampling of the
  original are left out.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, Optional

import tensorflow as tf

from he_keras import losses
from he_keras.attacks.adaptive import boundary_margin
from he_keras.attacks.base import Attack, batch_mask, check_int, logits_of, predict, require
from he_keras.attacks.core import make_generator, project, validate_attack_params

_ADAM_BETA_1 = 0.9
_ADAM_BETA_2 = 0.999
_ADAM_EPSILON = 1e-8


def _log_prob_margin(model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    log_probs = tf.nn.log_softmax(logits_of(model, x))
    return losses.cw_margin(y, log_probs, float("inf"))


def _repeat(t: tf.Tensor, times: int) -> tf.Tensor:
    """Repeats every example `times` times along the batch axis."""
    return tf.repeat(t, times, axis=0)


class _ScoreBasedAttack(Attack):
    """Shared loop of NES and ZOO.

    Returns per example the first misclassified iterate, else the last one.
    """

    norm = "linf"

    def __init__(self, eps: float, steps: int, seed: Optional[int]) -> None:
        validate_attack_params(eps=eps, steps=steps, norm="linf")
        self.eps = float(eps)
        self.steps = int(steps)
        self.seed = seed
        self.rng = make_generator(seed)
        self._compile(self._run)

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return self._run_compiled(model, x, y)

    def _init_state(self, x: tf.Tensor) -> tuple:
        return ()

    @abc.abstractmethod
    def _update(
        self, model: Callable, x: tf.Tensor, y: tf.Tensor, x_adv: tf.Tensor, state: tuple
    ) -> tuple[tf.Tensor, tuple]:
        """One step: the next iterate and the next optimizer state."""

    def _run(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        x_adv = x
        broken = tf.not_equal(predict(model, x), y)
        best = x
        state = self._init_state(x)
        i = tf.constant(0)
        while i < self.steps and not tf.reduce_all(broken):
            x_adv, state = self._update(model, x, y, x_adv, state)
            hit = tf.not_equal(predict(model, x_adv), y)
            hit = tf.logical_and(hit, tf.logical_not(broken))
            best = tf.where(batch_mask(hit, x), x_adv, best)
            broken = tf.logical_or(broken, hit)
            i += 1
        return tf.where(batch_mask(broken, x), best, x_adv)


class NES(_ScoreBasedAttack):
    """NES gradient estimation + L-inf PGD on the margin loss.

    Each step costs `samples + 1` forward passes per example (the estimate
    and the success check); all examples of a batch are evaluated in one
    call of `batch_size * samples` inputs.

    Args:
        eps: Radius of the L-inf threat model in pixel units.
        step_size: Size of each sign step.
        steps: Number of steps.
        samples: Samples per estimate (even: `samples / 2` antithetic pairs).
        sigma: Standard deviation of the search directions (pixel units).
        seed: Seed of the search directions.

    Example:

    ```python
    attack = NES(eps=8 / 255, step_size=1 / 255, steps=100, samples=128, seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    name = "nes"

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int = 100,
        samples: int = 128,
        sigma: float = 1e-3,
        seed: Optional[int] = None,
    ) -> None:
        validate_attack_params(step_size=step_size)
        samples = check_int("samples", samples, minimum=2)
        require(samples % 2 == 0, "samples", samples, "even")
        require(sigma > 0.0, "sigma", sigma, "> 0")
        self.step_size = float(step_size)
        self.samples = samples
        self.sigma = float(sigma)
        super().__init__(eps, steps, seed)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "step_size": self.step_size,
            "steps": self.steps,
            "samples": self.samples,
            "sigma": self.sigma,
            "loss": "margin",
            "seed": self.seed,
        }

    def _update(
        self, model: Callable, x: tf.Tensor, y: tf.Tensor, x_adv: tf.Tensor, state: tuple
    ) -> tuple[tf.Tensor, tuple]:
        pairs = self.samples // 2
        shape = tf.shape(x)
        u = self.rng.normal(tf.concat([[shape[0] * pairs], shape[1:]], 0))
        center = _repeat(x_adv, pairs)
        labels = _repeat(y, pairs)
        plus = boundary_margin(model, center + self.sigma * u, labels)
        minus = boundary_margin(model, center - self.sigma * u, labels)
        weighted = batch_mask(plus - minus, u) * u
        weighted = tf.reshape(weighted, tf.concat([[shape[0], pairs], shape[1:]], 0))
        grad = tf.reduce_sum(weighted, axis=1) / (self.samples * self.sigma)
        delta = project(x_adv + self.step_size * tf.sign(grad) - x, self.eps, "linf")
        return tf.clip_by_value(x + delta, 0.0, 1.0), state


class ZOO(_ScoreBasedAttack):
    """ZOO: coordinate-wise finite differences with coordinate Adam, L-inf.

    Each step costs `2 * coords_per_step + 1` forward passes per example.

    Args:
        eps: Radius of the L-inf threat model in pixel units.
        steps: Number of steps.
        coords_per_step: Coordinates estimated and updated per step (capped
            at the input dimension).
        h: Finite-difference step (pixel units).
        lr: Adam learning rate (pixel units).
        kappa: Confidence of the CW loss (0: stop pushing at the boundary).
        seed: Seed of the coordinate draw.

    Example:

    ```python
    attack = ZOO(eps=8 / 255, steps=1000, coords_per_step=128, seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    name = "zoo"

    def __init__(
        self,
        eps: float,
        steps: int = 1000,
        coords_per_step: int = 128,
        h: float = 1e-4,
        lr: float = 0.01,
        kappa: float = 0.0,
        seed: Optional[int] = None,
    ) -> None:
        self.coords_per_step = check_int("coords_per_step", coords_per_step)
        require(h > 0.0, "h", h, "> 0")
        require(lr > 0.0, "lr", lr, "> 0")
        require(kappa >= 0.0, "kappa", kappa, ">= 0")
        self.h = float(h)
        self.lr = float(lr)
        self.kappa = float(kappa)
        super().__init__(eps, steps, seed)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "steps": self.steps,
            "coords_per_step": self.coords_per_step,
            "h": self.h,
            "lr": self.lr,
            "kappa": self.kappa,
            "loss": "cw-log-prob",
            "seed": self.seed,
        }

    def _loss(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """CW loss of log-probabilities (minimized), with `j != y`:
        `max(log p_y - max_j log p_j, -kappa)`."""
        return tf.maximum(-_log_prob_margin(model, x, y), -self.kappa)

    def _init_state(self, x: tf.Tensor) -> tuple:
        # The input dimension stays static (the batch size may not be known).
        flat = tf.zeros_like(tf.reshape(x, [-1, math.prod(x.shape[1:])]))
        return flat, flat, flat

    def _update(
        self, model: Callable, x: tf.Tensor, y: tf.Tensor, x_adv: tf.Tensor, state: tuple
    ) -> tuple[tf.Tensor, tuple]:
        m, v, counts = state
        batch, dims = tf.shape(m)[0], m.shape[1]
        k = min(self.coords_per_step, dims)
        coords = tf.math.top_k(self.rng.uniform([batch, dims]), k=k).indices
        basis = tf.one_hot(coords, dims) * self.h
        center = tf.reshape(x_adv, [batch, 1, dims])
        probes = tf.concat([center + basis, center - basis], 1)
        probes = tf.reshape(probes, [-1, *x.shape[1:]])
        values = tf.reshape(self._loss(model, probes, _repeat(y, 2 * k)), [batch, 2, k])
        grad = (values[:, 0] - values[:, 1]) / (2.0 * self.h)
        rows = tf.repeat(tf.range(batch)[:, None], k, axis=1)
        index = tf.stack([rows, coords], axis=-1)
        count = tf.gather_nd(counts, index) + 1.0
        m_k = _ADAM_BETA_1 * tf.gather_nd(m, index) + (1.0 - _ADAM_BETA_1) * grad
        v_k = _ADAM_BETA_2 * tf.gather_nd(v, index) + (1.0 - _ADAM_BETA_2) * tf.square(grad)
        m_hat = m_k / (1.0 - _ADAM_BETA_1**count)
        v_hat = v_k / (1.0 - _ADAM_BETA_2**count)
        flat_x = tf.reshape(x, [batch, dims])
        flat_adv = tf.reshape(x_adv, [batch, dims])
        step = self.lr * m_hat / (tf.sqrt(v_hat) + _ADAM_EPSILON)
        moved = tf.gather_nd(flat_adv, index) - step
        flat_adv = tf.tensor_scatter_nd_update(flat_adv, index, moved)
        delta = project(flat_adv - flat_x, self.eps, "linf")
        x_adv = tf.reshape(tf.clip_by_value(flat_x + delta, 0.0, 1.0), tf.shape(x))
        state = (
            tf.tensor_scatter_nd_update(m, index, m_k),
            tf.tensor_scatter_nd_update(v, index, v_k),
            tf.tensor_scatter_nd_update(counts, index, count),
        )
        return x_adv, state
