"""Auto-PGD (APGD) of Croce & Hein (2020), untargeted and targeted.

"Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML 2020, https://arxiv.org/abs/2003.01690). APGD
is PGD with momentum and a step size that adapts per example, so it needs no
step-size tuning:

- start `x_0 = x + eps * t / ||t||` (t uniform in [-1, 1]^d for L-inf,
  standard normal for L2), clipped to [0, 1]; first step `eta = 2 * eps`;
- `z = P(x_k + eta * dir(g_k))`,
  `x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))` with `a = 0.75`
  (`a = 1` on the first step), `P` the projection on the eps-ball ∩ [0, 1];
- checkpoints (`checkpoint_schedule`) after `int(0.22 N)` steps, the
  interval then shrinking by `int(0.03 N)` per checkpoint down to
  `int(0.06 N)`, as AutoAttack's code does (for N = 100 these are the paper's
  `ceil(p_j N)`: 22, 41, 57, 70, 80, 87, 93, 99); at a checkpoint the step of
  an example is halved, and its iterate restarts from its best-loss point
  (with that point's gradient), if (1) its loss increased in at most `rho` of
  the steps since the last checkpoint (the first interval counts the first
  step against the start point, as the paper defines it) or (2) its step was
  not halved at the previous checkpoint and its best loss did not improve
  since then;
- the best adversarial point of every example is kept; restarts rerun only
  the examples still classified correctly.

The whole iteration loop of one run is a single `tf.function`.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from he_keras import losses
from he_keras.attacks.base import (
    Attack,
    batch_mask,
    check_int,
    check_target_classes,
    logits_of,
    perturbation_norm,
    predict,
    ranked_class,
    require,
)
from he_keras.attacks.core import (
    ascent_direction,
    graph_ready,
    loop_step,
    make_generator,
    project,
    validate_attack_params,
)

APGD_LOSSES = ("ce", "dlr")


def checkpoint_schedule(steps: int) -> list[int]:
    """The step counts after which APGD checks its step sizes.

    AutoAttack's rule: the first check after `max(int(0.22 N), 1)` steps,
    each following interval `max(int(0.03 N), 1)` shorter than the last, but
    at least `max(int(0.06 N), 1)`.

    Args:
        steps: The number of iterations `N`.

    Returns:
        Increasing step counts in `[1, N]`.

    Example:

    >>> checkpoint_schedule(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    interval = max(int(0.22 * steps), 1)
    decrease = max(int(0.03 * steps), 1)
    minimum = max(int(0.06 * steps), 1)
    checks = []
    at = interval
    while at <= steps:
        checks.append(at)
        interval = max(interval - decrease, minimum)
        at += interval
    return checks


class APGD(Attack):
    """Untargeted Auto-PGD with the cross-entropy or the DLR loss.

    APGD-CE is the first attack of AutoAttack; APGD-DLR (untargeted) is part
    of its "plus" and "rand" versions. The DLR loss is invariant to shifting
    and rescaling the logits, so a temperature or an HE scale `s` cannot
    hide anything from it.

    Returns per example the adversarial point found, else its highest-loss
    iterate.

    Args:
        eps: Radius of the threat model in pixel units ([0, 1] images).
        norm: `"linf"` or `"l2"`.
        loss: `"ce"` or `"dlr"` (DLR needs at least 3 classes).
        steps: Iterations per run (AutoAttack: 100).
        restarts: Runs from new random starts; each reruns only the examples
            no earlier run broke.
        rho: Fraction of increasing steps below which the step is halved.
        seed: Seed of the random starts (None: non-deterministic).

    Example:

    ```python
    attack = APGD(eps=8 / 255, loss="ce", seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        loss: str = "ce",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        seed: Optional[int] = None,
    ) -> None:
        validate_attack_params(eps=eps, steps=steps, norm=norm)
        require(loss in APGD_LOSSES, "loss", loss, f"one of {APGD_LOSSES}")
        require(0.0 < rho <= 1.0, "rho", rho, "in (0, 1]")
        self.eps = float(eps)
        self.norm = norm
        self.loss = loss
        self.steps = int(steps)
        self.restarts = check_int("restarts", restarts)
        self.rho = float(rho)
        self.seed = seed
        self.name = f"apgd-{loss}"
        self.rng = make_generator(seed)
        self._compile(self._run)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "loss": self.loss,
            "steps": self.steps,
            "restarts": self.restarts,
            "rho": self.rho,
            "checkpoints": checkpoint_schedule(self.steps),
            "seed": self.seed,
        }

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if self.loss == "dlr" and logits_of(model, x[:1]).shape[-1] < 3:
            raise ValueError("The DLR loss needs a model with at least 3 classes.")
        return self._restarts(model, x, y, y, self.restarts)[0]

    def _loss(self, y: tf.Tensor, logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        if self.loss == "ce":
            return losses.cross_entropy(y, logits)
        return losses.dlr(y, logits)

    def _restarts(
        self,
        model: Callable,
        x: tf.Tensor,
        y: tf.Tensor,
        target: tf.Tensor,
        runs: int,
        x_adv: Optional[tf.Tensor] = None,
        robust: Optional[tf.Tensor] = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Runs APGD `runs` times on the examples still robust.

        Returns the adversarial inputs and the per-example robust flags.
        """
        if robust is None:
            x_adv = x
            robust = tf.equal(predict(model, x), y)
        best_loss = tf.fill(tf.shape(y), -float("inf"))
        for _ in range(runs):
            index = tf.where(robust)
            if index.shape[0] == 0:
                break
            run_x, run_broken, run_loss = self._run_compiled(
                model,
                tf.gather_nd(x, index),
                tf.gather_nd(y, index),
                tf.gather_nd(target, index),
            )
            # Keep a new adversarial point, else the higher-loss one.
            keep = tf.logical_or(run_broken, run_loss > tf.gather_nd(best_loss, index))
            keep_index = tf.boolean_mask(index, keep)
            x_adv = tf.tensor_scatter_nd_update(
                x_adv, keep_index, tf.boolean_mask(run_x, keep)
            )
            best_loss = tf.tensor_scatter_nd_update(
                best_loss, keep_index, tf.boolean_mask(run_loss, keep)
            )
            robust = tf.tensor_scatter_nd_update(
                robust, index, tf.logical_not(run_broken)
            )
        return x_adv, robust

    def _project(self, x_new: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(x + project(x_new - x, self.eps, self.norm), 0.0, 1.0)

    def _start(self, x: tf.Tensor) -> tf.Tensor:
        if self.norm == "linf":
            t = self.rng.uniform(tf.shape(x), -1.0, 1.0)
            scale = batch_mask(perturbation_norm(t, "linf"), x)
        else:
            t = self.rng.normal(tf.shape(x))
            scale = batch_mask(perturbation_norm(t, "l2"), x)
        return tf.clip_by_value(x + self.eps * t / (scale + 1e-12), 0.0, 1.0)

    def _run(
        self, model: Callable, x: tf.Tensor, y: tf.Tensor, target: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One APGD run; returns (x_out, broken, best loss)."""
        steps = self.steps
        # Per iteration: whether a check follows it, and the steps since the
        # previous check.
        checks = checkpoint_schedule(steps)
        intervals = [0.0] * steps
        for previous, at in zip([0] + checks, checks):
            intervals[at - 1] = float(at - previous)
        is_check = tf.constant([interval > 0 for interval in intervals])
        check_interval = tf.constant(intervals)

        model = graph_ready(model)

        @loop_step
        def loss_and_grad(x_adv):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                logits = logits_of(model, x_adv)
                loss = self._loss(y, logits, target)
            grad = tape.gradient(loss, x_adv)
            broken = tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), y)
            return loss, grad, broken

        x_adv = self._start(x)
        loss, grad, broken = loss_and_grad(x_adv)
        adv = x_adv
        x_best, grad_best, loss_best = x_adv, grad, loss
        x_prev = x_adv
        step = 2.0 * self.eps * tf.ones_like(loss)
        loss_prev = loss
        increases = tf.zeros_like(loss)
        reduced_last = tf.ones_like(broken)
        loss_best_last = loss_best

        for i in tf.range(steps):
            momentum = tf.where(i == 0, 1.0, 0.75)
            direction = ascent_direction(grad, self.norm)
            z = self._project(x_adv + batch_mask(step, x) * direction, x)
            x_new = self._project(
                x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev), x
            )
            x_prev, x_adv = x_adv, x_new
            loss, grad, hit = loss_and_grad(x_adv)
            adv = tf.where(batch_mask(hit, x), x_adv, adv)
            broken = tf.logical_or(broken, hit)
            increases += tf.cast(loss > loss_prev, tf.float32)
            loss_prev = loss
            improved = loss > loss_best
            x_best = tf.where(batch_mask(improved, x), x_adv, x_best)
            grad_best = tf.where(batch_mask(improved, x), grad, grad_best)
            loss_best = tf.where(improved, loss, loss_best)

            at_check = is_check[i]
            oscillating = increases <= self.rho * check_interval[i]
            stalled = tf.logical_and(
                tf.logical_not(reduced_last), loss_best_last >= loss_best
            )
            halve = tf.logical_and(at_check, tf.logical_or(oscillating, stalled))
            step = tf.where(halve, step / 2.0, step)
            x_adv = tf.where(batch_mask(halve, x), x_best, x_adv)
            grad = tf.where(batch_mask(halve, x), grad_best, grad)
            reduced_last = tf.where(at_check, halve, reduced_last)
            loss_best_last = tf.where(at_check, loss_best, loss_best_last)
            increases = tf.where(at_check, 0.0, increases)
        x_out = tf.where(batch_mask(broken, x), adv, x_best)
        return x_out, broken, loss_best


class APGDTargeted(APGD):
    """APGD-T: Auto-PGD on the targeted DLR loss over several target classes.

    The second attack of AutoAttack. For each example the targets are the
    classes with the 2nd, 3rd, ..., (n+1)-th highest clean logits; one run
    per target (times `restarts`), each on the examples no earlier run broke.
    The targeted DLR loss `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)` is
    scale-invariant and needs at least 4 classes.

    Args:
        eps: Radius of the threat model in pixel units.
        norm: `"linf"` or `"l2"`.
        steps: Iterations per run (AutoAttack: 100).
        n_target_classes: Number of target classes (AutoAttack: 9); at most
            `classes - 1`.
        restarts: Runs per target class.
        rho: Fraction of increasing steps below which the step is halved.
        seed: Seed of the random starts.

    Example:

    ```python
    attack = APGDTargeted(eps=8 / 255, n_target_classes=9, seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        rho: float = 0.75,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(
            eps=eps,
            norm=norm,
            loss="dlr",
            steps=steps,
            restarts=restarts,
            rho=rho,
            seed=seed,
        )
        self.n_target_classes = check_int("n_target_classes", n_target_classes)
        self.name = "apgd-t"

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "loss": "targeted-dlr",
            "n_target_classes": self.n_target_classes,
        }

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Runs APGD toward each target class in turn.

        Raises:
            ValueError: If the model has fewer than 4 classes or fewer than
                `n_target_classes + 1`.
        """
        logits = logits_of(model, x)
        check_target_classes(logits.shape[-1], self.n_target_classes, minimum=4)
        x_adv = x
        robust = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y)
        for rank in range(2, self.n_target_classes + 2):
            x_adv, robust = self._restarts(
                model, x, y, ranked_class(logits, rank), self.restarts, x_adv, robust
            )
        return x_adv

    def _loss(self, y: tf.Tensor, logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        return losses.targeted_dlr(y, logits, target)
