"""PGD adapted to HE heads (Pang et al., NeurIPS 2020, https://arxiv.org/abs/2002.08619).

`HEAdaptivePGD` runs the compiled PGD of `adaptive.WorstCasePGD` on CE of
the raw cosines `logits / s` and on the scale-free DLR and CW-margin losses,
and keeps the per-example worst case (the margin rule of `adaptive`).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import tensorflow as tf

from he_keras import losses
from he_keras.attacks.adaptive import WorstCasePGD, head_summary, raw_scale
from he_keras.attacks.base import require

HE_OBJECTIVES = ("raw_ce", "dlr", "cw")


def _raw_ce(y: tf.Tensor, logits: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    return losses.cross_entropy(y, logits / scale)


class HEAdaptivePGD(WorstCasePGD):
    """PGD adapted to HE heads: worst case over objectives CE-PGD cannot follow.

    For a model whose head is `HypersphereDense` (logits `s * cos(theta)`) or
    `ArcCosLogits` (`-s * theta`), runs PGD on

    - `"raw_ce"`: CE on the raw output `logits / s` (the cosines for HE), the
      objective a model serving raw cosines (RobustBench's HE entries) meets;
    - `"dlr"`: the scale- and shift-free DLR loss;
    - `"cw"`: the CW margin `max_{j!=y} c_j - c_y` on the cosines (its
      sign-gradient steps are those of the margin on the logits);

    and keeps the per-example worst case. Each can take another path than
    CE-PGD on the logits. The HE paper's adaptive objective, its training
    loss `CE(s * (cos - m * 1_y))`, cannot: subtracting any constant from the
    true-class logit multiplies the gradient of CE with respect to the logits
    by a positive per-example factor and leaves the order of the losses
    unchanged, so in exact arithmetic sign-PGD (and normalized L2 PGD) on it
    takes the path of CE-PGD on the logits, for every margin `m`. In float32
    the two part only where CE saturates (a top-2 logit gap above ~16, reached
    at large `s` such as HE-LIS / HE-CMP's): there the true-class gradient of
    CE rounds to 0; `"raw_ce"`, `"dlr"` and `"cw"` cover that case without
    saturating. It is therefore not rerun here, and no objective here needs
    `m` (the CW margin with the offset is the CW margin plus a constant).

    For a model without an HE head the raw output is the logits, so
    `"raw_ce"` would be CE-PGD itself and is skipped; the other objectives
    run (CE if no other was asked for).

    Args:
        eps: Radius of the threat model in pixel units.
        step_size: Step size.
        steps: Steps per objective.
        objectives: Which of `HE_OBJECTIVES` to run, in order.
        norm: `"linf"` or `"l2"`.
        seed: Seed of the random starts.

    Example:

    ```python
    attack = HEAdaptivePGD(eps=8 / 255, step_size=2 / 255, steps=20, seed=0)
    x_adv = attack(he_model, x, y)
    ```
    """

    name = "he-adaptive-pgd"

    def __init__(
        self,
        eps: float,
        step_size: float,
        steps: int,
        objectives: Sequence[str] = HE_OBJECTIVES,
        norm: str = "linf",
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(eps, step_size, steps, norm, seed)
        objectives = tuple(objectives)
        require(
            len(objectives) > 0 and set(objectives) <= set(HE_OBJECTIVES),
            "objectives",
            objectives,
            f"a non-empty subset of {HE_OBJECTIVES}",
        )
        self.objectives = objectives
        named = {"raw_ce": _raw_ce, "dlr": "dlr", "cw": "cw"}
        self._attacks = {name: self._pgd(named[name]) for name in objectives}
        self._ce = self._pgd("ce") if set(objectives) == {"raw_ce"} else None
        self._last_head: Optional[dict] = None

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict.

        Once the attack has run, `last_model` names the head and the scale
        `s` the raw output was taken with, and `objectives_run` the
        objectives actually used on it.
        """
        config = {
            **super().config(),
            "objectives": list(self.objectives),
            "raw_output": "logits/s (cosines for HE, -theta for m-HE)",
            "margin_m": "not used: a true-class offset s*m leaves the CE-PGD path unchanged "
            "in exact arithmetic (in float32 it parts only where CE saturates)",
        }
        if self._last_head is not None:
            config["last_model"] = self._last_head
            config["objectives_run"] = self._objectives_for(self._last_head["head"])
        return config

    def _objectives_for(self, kind: str) -> list:
        if kind != "linear":
            return list(self.objectives)
        names = [name for name in self.objectives if name != "raw_ce"]
        return names or ["ce"]

    def _runs(self, model: Callable) -> list:
        self._last_head = head_summary(model)
        scale = raw_scale(model)
        names = self._objectives_for(self._last_head["head"])
        return [
            (self._ce if name == "ce" else self._attacks[name], scale) for name in names
        ]
