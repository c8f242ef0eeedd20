"""FastAT, "Fast is better than free" (Wong et al., 2020): FGSM with a random start."""

from __future__ import annotations

from typing import Any, Optional

import keras

from he_keras.defaults import NATURAL_IMAGE_EPS
from he_keras.training.pgdat import PGDAT

# FGSM step of FastAT as a multiple of eps (alpha = 10/255 for eps = 8/255).
STEP_TO_EPS = 1.25


@keras.saving.register_keras_serializable(package="he_keras")
class FastAT(PGDAT):
    """FastAT: one FGSM step of `1.25 * eps` from a uniform random start.

    Trains on `x*` only (cross-entropy, or the HE margin loss for HE / m-HE
    heads; the attack maximizes cross-entropy on the logits, `s*cos(theta)`
    for HE), with BN in training mode for both forward passes. Pair it with
    the cyclic (`onecycle`) learning rate and the catastrophic-overfitting
    early stop (`he_keras.training.callbacks.CatastrophicOverfittingStop`,
    `--callbacks=fastat_early_stop`).

    Args:
        classifier: The model to train.
        eps: L-inf radius.
        step_size: FGSM step (None: `1.25 * eps`).
        steps: Must be 1 (one FGSM step).
        random_start: Start of the step (default `"uniform"` in the eps-ball).
        attack_training: BN mode while crafting (None: True, as FastAT).
        **kwargs: Other `AdversarialTrainer` arguments.

    Example:

    ```python
    trainer = FastAT(classifier, eps=8 / 255)    # alpha = 10/255
    ```
    """

    default_attack_training = True

    def __init__(
        self,
        classifier: keras.Model,
        eps: float = NATURAL_IMAGE_EPS,
        step_size: Optional[float] = None,
        steps: int = 1,
        random_start: Optional[str] = "uniform",
        attack_training: Optional[bool] = None,
        **kwargs: Any,
    ) -> None:
        if steps != 1:
            raise ValueError(f"FastAT takes one FGSM step. Received: steps={steps!r}")
        if step_size is None:
            step_size = STEP_TO_EPS * eps
        super().__init__(
            classifier,
            eps=eps,
            step_size=step_size,
            steps=steps,
            random_start=random_start,
            attack_training=attack_training,
            **kwargs,
        )
