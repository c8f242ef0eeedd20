"""Transfer attack: craft on a source (substitute) model, evaluate on another.

A sanity check of the evaluation (Carlini et al. 2019): examples crafted
white-box on a similar, independently trained model should hurt the target
model less than a white-box attack on the target itself. If they hurt it
more, the white-box attack on the target is failing (gradient masking).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from he_keras.attacks.base import Attack


class TransferAttack(Attack):
    """Runs `base_attack` on `source_model`, ignoring the attacked model.

    Args:
        source_model: The model the examples are crafted on.
        base_attack: Any attack of this package, called as
            `base_attack(source_model, x, y)`.

    Example:

    ```python
    attack = TransferAttack(substitute, APGD(eps=8 / 255, seed=0))
    x_adv = attack(target_model, x, y)  # crafted on `substitute`
    ```
    """

    def __init__(self, source_model: Callable, base_attack: Callable) -> None:
        if not callable(base_attack):
            raise ValueError(
                "`base_attack` must be a callable attack. "
                f"Received: base_attack={base_attack!r}"
            )
        self.source_model = source_model
        self.base_attack = base_attack
        self.name = f"transfer-{getattr(base_attack, 'name', type(base_attack).__name__)}"

    @property
    def trace_count(self) -> int:
        """Traces of the base attack."""
        return getattr(self.base_attack, "trace_count", 0)

    def config(self) -> dict:
        """The attack's settings as a JSON-ready dict."""
        base_config = getattr(self.base_attack, "config", None)
        base = base_config() if base_config else type(self.base_attack).__name__
        source = getattr(self.source_model, "name", type(self.source_model).__name__)
        return {"name": self.name, "source_model": source, "base_attack": base}

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Crafts on the source model; the attacked `model` is not used."""
        return tf.convert_to_tensor(self.base_attack(self.source_model, x, y), tf.float32)
