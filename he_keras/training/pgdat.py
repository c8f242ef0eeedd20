"""PGD-AT (Madry et al., 2018), plain / HE / m-HE."""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from he_keras.training.base import AdversarialTrainer


@keras.saving.register_keras_serializable(package="he_keras")
class PGDAT(AdversarialTrainer):
    """PGD adversarial training: train on PGD examples only.

    The attack maximizes cross-entropy on the logits (for HE heads the
    `s*cos(theta)` logits without margin, as the HE reference code does); the
    outer objective is the classification loss on `x*` (plain CE, or the HE
    margin loss for HE / m-HE heads). Table 1 of the HE paper.

    Args:
        classifier: The model to train.
        **kwargs: `AdversarialTrainer` arguments (eps, step_size, steps, ...).

    Example:

    ```python
    trainer = PGDAT(classifier, eps=8 / 255, step_size=2 / 255, steps=10)
    ```
    """

    def objective(
        self, x: tf.Tensor, x_adv: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, Optional[tf.Tensor], tf.Tensor]:
        adv_logits = self.classifier(x_adv, training=True)
        return self.classification_loss(y, adv_logits), None, adv_logits
