"""Projected-gradient attacks adapted to the defense, per-example worst case.

Every attack here is one or more runs of the compiled
`core.ProjectedGradientAttack` (uniform random start, best iterate kept) that
differ only in the objective, combined per example: a run's output replaces
the current one where it has a larger margin `max_{j!=y} z_j - z_y`, so an
adversarial output (positive margin) always wins and, among the others, the
one closest to the boundary is kept. Runs stop early once every example is
misclassified.

- `PGDRestarts`: one objective, several random restarts.
- `TemperaturePGD`: cross-entropy on `softmax(z / T)` over a sweep of
  temperatures (Temperature-PGD, "Intriguing class-wise properties of
  adversarial training", ICLR 2021 submission, arXiv 2105.14240). `T < 1`
  undoes a small logit scale (cosine logits), `T > 1` spreads the gradient
  when the softmax saturates.
- `HEAdaptivePGD`: for models with an HE / m-HE head (Pang et al., NeurIPS
  2020, https://arxiv.org/abs/2002.08619): the training objective
  `CE(s * (cos - m * 1_y))` with the head's own scale `s`, CE on the raw
  cosines `logits / s`, CE on the logits, and the scale-free DLR loss.
"""

from __future__ import annotations

import abc
from typing import Callable, Optional, Sequence, Union

import tensorflow as tf

from he_keras import losses
from he_keras.attacks.base import Attack, batch_mask, check_int, logits_of, require
from he_keras.attacks.core import ProjectedGradientAttack, validate_attack_params
from he_keras.models.heads import find_head

# 1/T = 50, 10, 2, 1 and 0.2: Table 6 of the Temperature-PGD paper finds HE
# models weakest at 1/T around 50; T > 1 covers saturated softmax outputs.
DEFAULT_TEMPERATURES = (0.02, 0.1, 0.5, 1.0, 5.0)
HE_OBJECTIVES = ("margin_ce", "raw_ce", "ce", "dlr")


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


def _objective_label(objective: Union[str, Callable]) -> str:
    if isinstance(objective, str):
        return objective
    return getattr(objective, "__name__", "custom")


class WorstCasePGD(Attack):
    """Base class: per-example worst case over projected-gradient runs.

    Subclasses build their `ProjectedGradientAttack` members in `__init__`
    (with `_pgd`) and list the runs for a model in `_runs`.

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
        for attack, reference in self._runs(model):
            if bool(tf.reduce_all(margin_best > 0.0)):
                break
            candidate = attack(model, x, y, reference)
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
        self._attack = self._pgd(objective, objective_params)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "restarts": self.restarts,
            "objective": self.objective,
            "objective_params": self.objective_params,
        }

    def _runs(self, model: Callable) -> list:
        return [(self._attack, None)] * self.restarts


class TemperaturePGD(WorstCasePGD):
    """Temperature-PGD: CE on `softmax(z / T)`, worst case over a T sweep.

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
        self._attacks = [
            self._pgd("temperature_ce", {"temperature": t}) for t in temperatures
        ]

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {**super().config(), "temperatures": list(self.temperatures)}

    def _runs(self, model: Callable) -> list:
        return [(attack, None) for attack in self._attacks]


def _margin_objective(margin: float) -> Callable:
    def margin_ce(y: tf.Tensor, logits: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        return losses.margin_cross_entropy(y, logits, scale * margin)

    return margin_ce


def _raw_ce(y: tf.Tensor, logits: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    return losses.cross_entropy(y, logits / scale)


class HEAdaptivePGD(WorstCasePGD):
    """PGD adapted to HE heads: worst case over the HE-specific objectives.

    For a model whose head is `HypersphereDense` (logits `s * cos(theta)`) or
    `ArcCosLogits` (`-s * theta`), runs PGD on

    - `"margin_ce"`: the training loss `CE(logits - s * m * 1_y)` with the
      head's current scale variable `s` (the m-HE angular margin for m-HE);
    - `"raw_ce"`: CE on the raw output `logits / s` (cosines for HE);
    - `"ce"`: CE on the logits;
    - `"dlr"`: the scale-free DLR loss;

    and keeps the per-example worst case. For a model without an HE head it
    runs CE only.

    Args:
        eps: Radius of the threat model in pixel units.
        step_size: Step size.
        steps: Steps per objective.
        margin: The margin `m` of the training loss (AT_HE: 0.2 for PGD-AT
            and TRADES, 0.3 for ALP).
        objectives: Which of `HE_OBJECTIVES` to run, in order.
        norm: `"linf"` or `"l2"`.
        seed: Seed of the random starts.

    Example:

    ```python
    attack = HEAdaptivePGD(eps=8 / 255, step_size=2 / 255, steps=20, margin=0.2, seed=0)
    x_adv = attack(he_model, x, y)
    ```
    """

    name = "he-adaptive-pgd"

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int,
        margin: float = 0.2,
        objectives: Sequence[str] = HE_OBJECTIVES,
        norm: str = "linf",
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(eps, step_size, steps, norm, seed)
        require(margin >= 0.0, "margin", margin, ">= 0")
        objectives = tuple(objectives)
        require(
            len(objectives) > 0 and set(objectives) <= set(HE_OBJECTIVES),
            "objectives",
            objectives,
            f"a non-empty subset of {HE_OBJECTIVES}",
        )
        self.margin = float(margin)
        self.objectives = objectives
        named = {
            "margin_ce": _margin_objective(self.margin),
            "raw_ce": _raw_ce,
            "ce": "ce",
            "dlr": "dlr",
        }
        self._attacks = {name: self._pgd(named[name]) for name in objectives}
        self._ce = self._attacks["ce"] if "ce" in self._attacks else self._pgd("ce")

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        return {
            **super().config(),
            "margin": self.margin,
            "objectives": list(self.objectives),
        }

    def _runs(self, model: Callable) -> list:
        head = find_head(model)
        if head is None:
            return [(self._ce, None)]
        scale = tf.cast(tf.convert_to_tensor(head.scale), tf.float32)
        return [(self._attacks[name], scale) for name in self.objectives]
