"""Helper-based adversarial training, HAT (Rade & Moosavi-Dezfooli, ICLR 2022)."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import keras
import tensorflow as tf

from he_keras.models.io import load_model
from he_keras.training.trades import TRADES

HELPER_DIR = "helper"


@keras.saving.register_keras_serializable(package="he_keras")
class HAT(TRADES):
    """HAT (Algorithm 1 of the paper): TRADES plus a helper-example loss.

    The attack is TRADES' (maximize `KL(p(x) || p(x'))` from
    `x + 0.001 N(0, 1)`). The helper example `x_h = x + h (x* - x)` (h = 2,
    neither clipped to [0, 1] nor to the eps-ball) gets the helper label
    `y_h = argmax f_std(x*)` of a frozen, standardly trained model `f_std` on
    the adversarial example. The objective is
    `L(f(x), y) + beta KL(p(x) || p(x*)) + gamma L(f(x_h), y_h)`, with `L` the
    classification loss (HE margin loss for HE / m-HE heads).

    Args:
        classifier: The model to train.
        helper_model: The standard model (`keras.Model`, frozen here), or the
            path of its `.keras` file.
        beta: Weight of the KL term (2.5 for CIFAR-10 in the paper).
        gamma: Weight of the helper loss (0.5).
        helper_step: Extrapolation `h` of the helper example (2.0).
        **kwargs: `AdversarialTrainer` arguments.

    Example:

    ```python
    standard = load_model("runs/standard/model.keras")
    trainer = HAT(classifier, helper_model=standard, beta=2.5, gamma=0.5)
    ```
    """

    hyperparameters: tuple = ("beta", "gamma", "helper_step", "helper_model")

    def __init__(
        self,
        classifier: keras.Model,
        helper_model: Union[keras.Model, str, None] = None,
        beta: float = 2.5,
        gamma: float = 0.5,
        helper_step: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(classifier, beta=beta, **kwargs)
        if isinstance(helper_model, str):
            helper_model = load_helper_model(helper_model)
        if not isinstance(helper_model, keras.Model):
            raise ValueError(
                "HAT needs the standard helper model (a keras.Model or a .keras path). "
                f"Received: helper_model={helper_model!r}"
            )
        if not float(gamma) >= 0:
            raise ValueError(f"`gamma` must be >= 0. Received: gamma={gamma!r}")
        if not float(helper_step) > 0:
            raise ValueError(f"`helper_step` must be > 0. Received: helper_step={helper_step!r}")
        helper_model.trainable = False
        self.helper_model = helper_model
        self.gamma = float(gamma)
        self.helper_step = float(helper_step)

    @classmethod
    def prerequisites(cls, config: Any) -> dict:
        """The standard helper model's run, when no helper model is given.

        The helper is a `standard` run with the same data, model, head and
        optimizer settings in `<output_dir>/helper` (reused when its
        `model.keras` exists).

        Args:
            config: The validated `TrainConfig` of the HAT run.

        Returns:
            `{"helper_model": overrides}` for the helper's run, or `{}` when
            `framework_params["helper_model"]` names a model (checked here).

        Raises:
            ValueError: for a helper model that cannot be loaded, or a
                multi-worker run without one.
        """
        path = config.framework_params.get("helper_model")
        if path:
            load_helper_model(path)
            return {}
        if config.strategy == "multi_worker":
            raise ValueError(
                "Multi-worker HAT needs a trained standard model: pass --helper_model. "
                "Received: helper_model=None"
            )
        return {"helper_model": dict(framework="standard", framework_params={}, callbacks=(),
                                     output_dir=os.path.join(config.output_dir, HELPER_DIR))}

    def helper_labels(self, x_adv: tf.Tensor) -> tf.Tensor:
        """`argmax` of the frozen standard model on the adversarial examples."""
        logits = self.helper_model(x_adv, training=False)
        return tf.stop_gradient(tf.argmax(logits, axis=-1, output_type=tf.int32))

    def objective(
        self, x: tf.Tensor, x_adv: tf.Tensor, y: tf.Tensor
    ) -> tuple[tf.Tensor, Optional[tf.Tensor], tf.Tensor]:
        loss, clean_logits, adv_logits = super().objective(x, x_adv, y)
        x_helper = x + self.helper_step * (x_adv - x)
        helper_logits = self.classifier(x_helper, training=True)
        loss += self.gamma * self.classification_loss(
            self.helper_labels(x_adv), helper_logits
        )
        return loss, clean_logits, adv_logits

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "helper_model": keras.saving.serialize_keras_object(self.helper_model),
            "gamma": self.gamma,
            "helper_step": self.helper_step,
        }

    @classmethod
    def from_config(cls, config: dict) -> "HAT":
        config = dict(config)
        config["helper_model"] = keras.saving.deserialize_keras_object(
            config["helper_model"]
        )
        return super().from_config(config)


def load_helper_model(path: str) -> keras.Model:
    """Loads HAT's standard model (`he_keras.models.io.load_model`).

    Args:
        path: A `.keras` file (e.g. a standard run's `model.keras`; the
            trainer serializes the helper, which a SavedModel cannot be).

    Returns:
        The loaded classifier.

    Raises:
        ValueError: naming `helper_model` and the problem with the file.
    """
    try:
        return load_model(path, saved_model=False)
    except ValueError as err:
        raise ValueError(f"`helper_model`: {err}") from err
