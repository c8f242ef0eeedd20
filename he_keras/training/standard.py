"""Standard (clean) training: the undefended baseline and HAT's helper model."""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from he_keras.training.base import AdversarialTrainer


@keras.saving.register_keras_serializable(package="he_keras")
class Standard(AdversarialTrainer):
    """Clean training: no inner maximization, the classification loss on x.

    The loss is cross-entropy for a linear head and the HE margin loss for HE /
    m-HE heads. The attack arguments only configure the PGD that `evaluate()`
    runs; `adv_accuracy` during `fit` is the (clean) training accuracy.

    Args:
        classifier: The model to train.
        **kwargs: `AdversarialTrainer` arguments (`eps` etc. for evaluation).

    Example:

    ```python
    trainer = Standard(classifier, eps=0.3)
    trainer.compile(optimizer="adam")
    trainer.fit(x, y, epochs=10)
    ```
    """

    def craft(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """No attack: the training input itself."""
        return x

    def objective(
        self, x: tf.Tensor, x_adv: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, Optional[tf.Tensor], tf.Tensor]:
        logits = self.classifier(x, training=True)
        return self.classification_loss(y, logits), logits, logits
