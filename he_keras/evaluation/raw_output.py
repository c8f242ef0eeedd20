"""Attacking the raw output of an HE / m-HE head instead of its logits.

An HE head outputs `s * cos(theta)` (m-HE: `-s * theta`); the raw output is
`logits / s`, the cosines themselves for HE. RobustBench's HE entry
(Pang2020Boosting) returns the raw cosines, so its AutoAttack number comes
from attacks on `cos(theta)`, while he-keras models return logits. Both
outputs have the same argmax, so an example that fools one fools the other;
only the losses the attacks climb differ (CE on cosines sees a nearly flat
softmax). The suite runs AutoAttack on both and keeps the per-point worst
case.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from he_keras.attacks.base import Attack
from he_keras.models.heads import find_head


class RawOutputModel:
    """`model(x) / s`: the raw output of a model with an HE / m-HE head.

    The head's scale variable is read at call time, so a scale schedule
    (HE-LIS, HE-CMP) is followed.

    Args:
        model: A Keras model whose head is a `HypersphereDense` or
            `ArcCosLogits`.

    Example:

    ```python
    cosines = RawOutputModel(he_model)(x)  # == he_model(x) / s
    ```
    """

    def __init__(self, model: keras.Model) -> None:
        head = find_head(model)
        if head is None:
            raise ValueError(
                f"`model` has no HE / m-HE head, so it has no raw output. Received: {model.name!r}"
            )
        self.model = model
        self.head = head

    def __call__(self, x: Any, training: bool = False) -> tf.Tensor:
        logits = tf.cast(self.model(x, training=training), tf.float32)
        return logits / tf.cast(tf.convert_to_tensor(self.head.scale), tf.float32)


class OnRawOutput(Attack):
    """Runs an attack on `RawOutputModel(model)` instead of `model`.

    The view is built once per model, so the wrapped attack's compiled loop
    is traced once.

    Args:
        attack: Any `Attack`.

    Example:

    ```python
    apgd_on_cosines = OnRawOutput(APGD(8 / 255, loss="ce", seed=0))
    x_adv = apgd_on_cosines(he_model, x, y)
    ```
    """

    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.name = f"{attack.name} on logits / s"
        self.eps = attack.eps
        self.norm = attack.norm
        self._model = None
        self._view = None

    def config(self) -> dict:
        """The wrapped attack's settings, with `output="logits / s"`."""
        return {**self.attack.config(), "name": self.name, "output": "logits / s"}

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if self._model is not model:
            self._model, self._view = model, RawOutputModel(model)
        return self.attack(self._view, x, y)
