"""Projected-gradient attacks adapted to the defense, per-example worst case.

Every attack here is one or more runs of the compiled
`core.ProjectedGradientAttack` (uniform random start, best iterate kept) that
differ only in the objective, combined per example: a run's output replaces
the current one where it has a larger margin `max_{j!=y} z_j - z_y`, so an
adversarial output (positive margin) always wins and, among the others, the
one closest to the boundary is kept. Runs stop early once every example is
misclassified.

- `PGDRestarts`: one objective, several random restarts.
- `TemperaturePGD`: cross-entropy on `softmax(f(x) / T)` over a sweep of
  temperatures (Temperature-PGD, "Intriguing class-wise properties of
  adversarial training", ICLR 2021 submission, arXiv 2105.14240), where `f`
  is the raw head output: the cosines `logits / s` of an HE / m-HE head (the
  paper's Table 6 sweeps 1/T on the cosines, its HE scale `s` "corresponds
  to the 1/T"), the logits of any other head.

`WorstCasePGD` is also the base of `he_adaptive.HEAdaptivePGD` (HE heads).

The scale `s` is read from the head's variable at every call, so HE-LIS /
HE-CMP schedules that change it are followed without retracing.
"""

from __future__ import annotations

import abc
from typing import Callable, Optional, Sequence, Union

import tensorflow as tf

from he_keras import losses
from he_keras.attacks.base import Attack, batch_mask, check_int, logits_of, require
from he_keras.attacks.core import ProjectedGradientAttack, validate_attack_params
from he_keras.models.heads import find_head, head_kind

# 1/T = 200, 50, 10, 2, 1 and 0.2 on the raw output (cosines for HE): Table 6
# of the Temperature-PGD paper finds HE weakest at 1/T = 50 and HE-LIS /
# HE-CMP at 125-200; T > 1 covers saturated softmax outputs.
DEFAULT_TEMPERATURES = (0.005, 0.02, 0.1, 0.5, 1.0, 5.0)


def boundary_margin(model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """`max_{j!=y} z_j - z_y` per example; positive exactly when misclassified."""
    return losses.cw_margin(y, logits_of(model, x), float("inf"))


def keep_worst(
    model: Callable,
    y: tf.Tensor,
    x_best: tf.Tensor,
    margin_best: tf.Tensor,
    candidate: tf.Tensor,
    valid: Optional[tf.Tensor] = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Keeps, per example, whichever of two inputs has the larger margin.

    Args:
        model: The attacked model.
        y: Integer labels.
        x_best: Current worst-case inputs.
        margin_best: Their margins (`boundary_margin`).
        candidate: New inputs from another run.
        valid: Optional per-example flags; invalid candidates are ignored.

    Returns:
        The updated `(x_best, margin_best)`.
    """
    margin = boundary_margin(model, candidate, y)
    better = margin > margin_best
    if valid is not None:
        better = tf.logical_and(better, valid)
    x_best = tf.where(batch_mask(better, candidate), candidate, x_best)
    return x_best, tf.where(better, margin, margin_best)


def raw_scale(model: Callable) -> tf.Tensor:
    """The factor between a model's logits and its raw head output.

    Args:
        model: A model, possibly with an HE / m-HE head.

    Returns:
        The current value of the head's scale variable `s` (so `logits / s`
        are the cosines of an HE head, `-theta` for m-HE), or 1.0 for a model
        without an HE head; a float32 scalar tensor.
    """
    head = find_head(model)
    if head is None:
        return tf.constant(1.0)
    scale = tf.cast(tf.convert_to_tensor(head.scale), tf.float32)
    if tf.executing_eagerly():
        # logits / 0 would be NaN, which keep_worst never accepts: the attack
        # would silently do nothing.
        value = float(scale)
        require(value > 0 and value == value, "s", value, "> 0 (the head's scale)")
    return scale


def head_summary(model: Callable) -> dict:
    """The head kind and scale of `model` as a JSON-ready dict.

    Args:
        model: A Keras classifier.

    Returns:
        `{"head": "linear" | "he" | "mhe", "s": the scale or None}`.
    """
    kind = head_kind(model)
    return {"head": kind, "s": float(raw_scale(model)) if kind != "linear" else None}


def _objective_label(objective: Union[str, Callable]) -> str:
    if isinstance(objective, str):
        return objective
    return getattr(objective, "__name__", "custom")


class WorstCasePGD(Attack):
    """Base class: per-example worst case over projected-gradient runs.

    Subclasses build their `ProjectedGradientAttack` members in `__init__`
    (with `_pgd`) and list the runs for a model in `_runs`.

    Attributes:
        last_runs: Runs the last call made (fewer than listed when every
            example was misclassified early).

    Args:
        eps: Radius of the threat model in pixel units.
        step_size: Step size of every run.
        steps: Steps of every run.
        norm: `"linf"` or `"l2"`.
        seed: Seed; member `i` uses `seed + i`.
    """

    name = "worst-case-pgd"

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int,
        norm: str = "linf",
        seed: Optional[int] = None,
    ) -> None:
        validate_attack_params(eps=eps, step_size=step_size, steps=steps, norm=norm)
        self.eps = float(eps)
        self.step_size = float(step_size)
        self.steps = int(steps)
        self.norm = norm
        self.seed = seed
        self._members: list[ProjectedGradientAttack] = []
        self.last_runs = 0

    @property
    def trace_count(self) -> int:
        """Traces of all member attacks (constant once every member ran)."""
        return sum(member.trace_count for member in self._members)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "step_size": self.step_size,
            "steps": self.steps,
            "random_start": "uniform",
            "seed": self.seed,
        }

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        x_best, margin_best = x, boundary_margin(model, x, y)
        self.last_runs = 0
        for attack, reference in self._runs(model):
            if bool(tf.reduce_all(margin_best > 0.0)):
                break
            candidate = attack(model, x, y, reference)
            self.last_runs += 1
            x_best, margin_best = keep_worst(model, y, x_best, margin_best, candidate)
        return x_best

    def _pgd(
        self, objective: Union[str, Callable], objective_params: Optional[dict] = None
    ) -> ProjectedGradientAttack:
        """Creates (and registers) one member attack."""
        seed = None if self.seed is None else self.seed + len(self._members)
        attack = ProjectedGradientAttack(
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            random_start="uniform",
            objective=objective,
            objective_params=objective_params,
            keep_best=True,
            seed=seed,
        )
        self._members.append(attack)
        return attack

    @abc.abstractmethod
    def _runs(self, model: Callable) -> list:
        """`(attack, reference)` pairs to run on `model`, in order."""


class PGDRestarts(WorstCasePGD):
    """PGD with random restarts, per-example worst case over the restarts.

    Args:
        eps: Radius of the threat model in pixel units.
        step_size: Step size.
        steps: Steps per restart.
        restarts: Number of runs from independent uniform random starts.
        norm: `"linf"` or `"l2"`.
        objective: An objective name of `he_keras.losses.get_objective`
            (`"ce"`, `"cw"`, `"dlr"`, ...) or a callable
            `(y, logits, reference) -> per-example loss`.
        objective_params: Parameters of a named objective.
        seed: Seed of the random starts.

    Example:

    ```python
    attack = PGDRestarts(eps=8 / 255, step_size=2 / 255, steps=100, restarts=5, seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int,
        restarts: int = 5,
        norm: str = "linf",
        objective: Union[str, Callable] = "ce",
        objective_params: Optional[dict] = None,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(eps, step_size, steps, norm, seed)
        self.restarts = check_int("restarts", restarts)
        self.objective = _objective_label(objective)
        self.objective_params = dict(objective_params or {})
        self.name = f"pgd-{self.objective}"
        self._member = self._pgd(objective, objective_params)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "restarts": self.restarts,
            "objective": self.objective,
            "objective_params": self.objective_params,
        }

    def _runs(self, model: Callable) -> list:
        # One member, called `restarts` times: its random stream goes on, so
        # every call starts from a new uniform point.
        return [(self._member, None)] * self.restarts


class TemperaturePGD(WorstCasePGD):
    """Temperature-PGD: CE on `softmax(f(x) / T)`, worst case over a T sweep.

    `f` is the raw head output: for an HE / m-HE head the logits divided by
    the head's current scale `s` (the cosines, resp. `-theta`), so `1/T` is
    the inverse temperature on the cosines that Table 6 of the paper sweeps
    and the sweep means the same for any `s` (HE-LIS and HE-CMP change `s`
    during training). For any other head `f` is the logits.

    Args:
        eps: Radius of the threat model in pixel units.
        step_size: Step size.
        steps: Steps per temperature (the paper uses 20).
        temperatures: Positive temperatures `T` to sweep.
        norm: `"linf"` or `"l2"`.
        seed: Seed of the random starts.

    Example:

    ```python
    attack = TemperaturePGD(eps=8 / 255, step_size=2 / 255, steps=20, seed=0)
    x_adv = attack(model, x, y)
    ```
    """

    name = "temperature-pgd"

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int,
        temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
        norm: str = "linf",
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(eps, step_size, steps, norm, seed)
        temperatures = tuple(float(t) for t in temperatures)
        require(
            len(temperatures) > 0 and min(temperatures) > 0.0,
            "temperatures",
            temperatures,
            "a non-empty sequence of positive floats",
        )
        self.temperatures = temperatures
        self._attacks = [self._pgd(_raw_temperature_ce(t)) for t in temperatures]
        self._last_head: Optional[dict] = None

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict.

        `inverse_temperatures` are the effective `1/T` on the raw output
        (`temperature_on`); once the attack has run, `last_model` names the
        head and scale it divided by, and `inverse_temperatures_on_logits`
        the resulting factors `1 / (s * T)` on that model's logits.
        """
        config = {
            **super().config(),
            "temperatures": list(self.temperatures),
            "inverse_temperatures": [1.0 / t for t in self.temperatures],
            "temperature_on": "raw cosines logits/s for an HE or m-HE head, else logits",
        }
        if self._last_head is not None:
            scale = self._last_head["s"] or 1.0
            config["last_model"] = self._last_head
            config["inverse_temperatures_on_logits"] = [
                1.0 / (scale * t) for t in self.temperatures
            ]
        return config

    def _runs(self, model: Callable) -> list:
        self._last_head = head_summary(model)
        scale = raw_scale(model)
        return [(attack, scale) for attack in self._attacks]


def _raw_temperature_ce(temperature: float) -> Callable:
    """CE on `logits / (scale * temperature)`; `scale` comes as the reference."""

    def raw_temperature_ce(y: tf.Tensor, logits: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        return losses.cross_entropy(y, logits / scale / temperature)

    return raw_temperature_ce
