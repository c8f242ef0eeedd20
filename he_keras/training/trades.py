"""TRADES (Zhang et al., 2019): clean loss plus a KL robustness regularizer."""

from __future__ import annotations

from typing import Any, Optional

import keras
import tensorflow as tf

from he_keras import losses
from he_keras.training.base import AdversarialTrainer


class PairedTrainer(AdversarialTrainer):
    """Base of the objectives on both clean and adversarial logits.

    Holds the weight `beta` of the term that ties the two (TRADES' KL, ALP's
    logit pairing) and runs both forward passes in training mode.

    Args:
        classifier: The model to train.
        beta: Non-negative weight of the clean-adversarial term.
        **kwargs: `AdversarialTrainer` arguments.
    """

    hyperparameters: tuple = ("beta",)

    def __init__(self, classifier: keras.Model, beta: float, **kwargs: Any) -> None:
        super().__init__(classifier, **kwargs)
        if not float(beta) >= 0:
            raise ValueError(f"`beta` must be >= 0. Received: beta={beta!r}")
        self.beta = float(beta)

    def paired_logits(self, x: tf.Tensor, x_adv: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Training-mode logits of the clean and the adversarial batch."""
        return self.classifier(x, training=True), self.classifier(x_adv, training=True)

    def get_config(self) -> dict:
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package="he_keras")
class TRADES(PairedTrainer):
    """TRADES: `L(f(x), y) + beta * KL(p(x) || p(x*))`.

    The attack maximizes `KL(softmax(f(x)) || softmax(f(x')))` from
    `x + 0.001 N(0, 1)` with BN in inference mode. The objective is the
    classification loss on the clean input (HE margin loss for HE / m-HE
    heads) plus `beta` times the per-example KL on the logits (`s*cos(theta)`
    for HE, no margin), averaged over the batch; the gradient flows through
    both the clean and the adversarial branch (the clean target is not
    detached), as in the reference code.

    Args:
        classifier: The model to train.
        beta: Weight of the KL term (`1/lambda`; 6 in the TRADES and HE
            papers).
        **kwargs: `AdversarialTrainer` arguments.

    Example:

    ```python
    trainer = TRADES(classifier, beta=6.0, eps=8 / 255, step_size=2 / 255)
    ```
    """

    attack_objective_name = "kl"
    default_random_start = "normal"

    def __init__(self, classifier: keras.Model, beta: float = 6.0, **kwargs: Any) -> None:
        super().__init__(classifier, beta=beta, **kwargs)

    def objective(
        self, x: tf.Tensor, x_adv: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, Optional[tf.Tensor], tf.Tensor]:
        clean_logits, adv_logits = self.paired_logits(x, x_adv)
        loss = self.classification_loss(
            y, clean_logits
        ) + self.beta * losses.kl_divergence(clean_logits, adv_logits)
        return loss, clean_logits, adv_logits
