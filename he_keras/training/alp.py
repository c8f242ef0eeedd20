"""Adversarial logit pairing (Kannan et al., 2018) with untargeted PGD."""

from __future__ import annotations

from typing import Any, Optional

import keras
import tensorflow as tf

from he_keras.training.trades import PairedTrainer


def logit_pairing(logits: tf.Tensor, adv_logits: tf.Tensor) -> tf.Tensor:
    """Per-example mean squared difference of two logit vectors.

    Averaged over the batch this is `F.mse_loss` of the reference code (the
    mean over batch x classes), the squared, 1/K-scaled form of the paper's
    `||f(x) - f(x*)||_2`.

    Args:
        logits: Clean logits, shape `(batch_size, classes)`.
        adv_logits: Adversarial logits, same shape.

    Returns:
        Shape `(batch_size,)`, float32.
    """
    diff = tf.cast(logits, tf.float32) - tf.cast(adv_logits, tf.float32)
    return tf.reduce_mean(tf.square(diff), axis=-1)


@keras.saving.register_keras_serializable(package="he_keras")
class ALP(PairedTrainer):
    """ALP: half clean, half adversarial loss plus a logit-pairing penalty.

    `0.5 L(f(x), y) + 0.5 L(f(x*), y) + beta * pairing(x, x*)`, where `L` is
    cross-entropy (HE margin loss for HE / m-HE heads), `x*` comes from
    untargeted PGD on cross-entropy of the logits (HE: `s*cos(theta)`, no
    margin) started at `x + 0.001 N(0, 1)` as in the HE reference code (Table
    1 of the HE paper), and the pairing is the mean squared logit difference
    on the *unscaled* logits: raw cosines for HE, `-theta` for m-HE (for HE
    this is the reference code's `beta * MSE(cos(x), cos(x*))`).

    Args:
        classifier: The model to train.
        beta: Weight `lambda` of the pairing term (0.5: HE paper and ALP+HE
            README).
        **kwargs: `AdversarialTrainer` arguments.

    Example:

    ```python
    trainer = ALP(classifier, beta=0.5, eps=8 / 255, step_size=2 / 255)
    ```
    """

    default_random_start = "normal"
    # Weight of the clean term; 1 - CLEAN_WEIGHT weighs the adversarial one.
    CLEAN_WEIGHT = 0.5

    def __init__(self, classifier: keras.Model, beta: float = 0.5, **kwargs: Any) -> None:
        super().__init__(classifier, beta=beta, **kwargs)

    def objective(
        self, x: tf.Tensor, x_adv: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, Optional[tf.Tensor], tf.Tensor]:
        clean_logits, adv_logits = self.paired_logits(x, x_adv)
        pairing = logit_pairing(
            self.unscaled_logits(clean_logits), self.unscaled_logits(adv_logits)
        )
        loss = (
            self.CLEAN_WEIGHT * self.classification_loss(y, clean_logits)
            + (1.0 - self.CLEAN_WEIGHT) * self.classification_loss(y, adv_logits)
            + self.beta * pairing
        )
        return loss, clean_logits, adv_logits
