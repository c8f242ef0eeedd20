"""Attacking another view of a model than its logits.

**Raw output.** An HE head outputs `s * cos(theta)` (m-HE: `-s * theta`); the raw output is
`logits / s`, the cosines themselves for HE. RobustBench's HE entry
(Pang2020Boosting) returns the raw cosines, so its AutoAttack number comes
from attacks on `cos(theta)`, while he-keras models return logits. Both
outputs have the same argmax, so an example that fools one fools the other;
only the losses the attacks climb differ (CE on cosines sees a nearly flat
softmax). The suite runs AutoAttack on both and keeps the per-point worst
case.

**Feature normalization (FN).** The HE paper (Table 7) attacks a standardly
trained model with FN in the adversarial objective: the logits of its linear
head recomputed from L2-normalized penultimate features. The view here
rescales each point's normalized features by the norm of its clean
features, so at the clean point the view's logits *are* the model's logits
and only the gradient differs: its component that merely grows or shrinks
the feature norm is removed.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from he_keras.attacks.base import Attack
from he_keras.attacks.feature import penultimate_model
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


class FeatureNormalizedModel:
    """Logits of a linear head from L2-normalized penultimate features (FN).

    `W^T (z / ||z||) * r + b`, where `z` are the penultimate features of the
    input and `r` the norm of the clean features of the same point, set by
    `set_reference` before an attack (a variable of any batch size, so a
    compiled attack loop is traced once).

    Args:
        model: A functional Keras model whose last layer is a `Dense` head
            (no FN of its own: an HE head normalizes its features already).

    Example:

    ```python
    view = FeatureNormalizedModel(model)
    view.set_reference(x)
    view(x)  # == model(x); view(x + delta) ignores the feature norm's change
    ```
    """

    def __init__(self, model: keras.Model) -> None:
        head = model.layers[-1]
        if find_head(model) is not None or not isinstance(head, keras.layers.Dense):
            raise ValueError(
                "FN in the attack objective needs a model whose last layer is a linear "
                f"`Dense` head. Received: {model.name!r} ending in {type(head).__name__}"
            )
        self.model = model
        self.head = head
        self.features = penultimate_model(model)
        self.reference_norm = tf.Variable(
            tf.ones([1, 1]), shape=tf.TensorShape([None, 1]), trainable=False
        )

    def set_reference(self, x: Any) -> None:
        """Takes the clean inputs whose feature norms rescale the normalized features."""
        z = tf.cast(self.features(x, training=False), tf.float32)
        self.reference_norm.assign(tf.norm(z, axis=-1, keepdims=True))

    def __call__(self, x: Any, training: bool = False) -> tf.Tensor:
        z = tf.cast(self.features(x, training=training), tf.float32)
        z = tf.math.l2_normalize(z, axis=-1) * self.reference_norm
        logits = tf.matmul(z, tf.cast(self.head.kernel, tf.float32))
        if self.head.use_bias:
            logits = logits + tf.cast(self.head.bias, tf.float32)
        return logits


class OnView(Attack):
    """Runs an attack on a view of the model (built once per model) instead of the model.

    The view is built once per model, so the wrapped attack's compiled loop
    is traced once. Subclasses name the view (`OUTPUT`) and build it
    (`make_view`); `prepare` readies it for a batch.

    Args:
        attack: Any `Attack`.
    """

    OUTPUT = ""

    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.name = f"{attack.name} on {self.OUTPUT}"
        self.eps = attack.eps
        self.norm = attack.norm
        self._model = None
        self._view = None

    def config(self) -> dict:
        """The wrapped attack's settings, with `output` naming the view."""
        return {**self.attack.config(), "name": self.name, "output": self.OUTPUT}

    def make_view(self, model: Callable) -> Callable:
        raise NotImplementedError

    def prepare(self, view: Callable, x: tf.Tensor) -> None:
        """Readies the view for the batch `x` (nothing by default)."""

    def _attack(self, model: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if self._model is not model:
            self._model, self._view = model, self.make_view(model)
        self.prepare(self._view, x)
        return self.attack(self._view, x, y)


class OnRawOutput(OnView):
    """Runs an attack on `RawOutputModel(model)` instead of `model`.

    Args:
        attack: Any `Attack`.

    Example:

    ```python
    apgd_on_cosines = OnRawOutput(APGD(8 / 255, loss="ce", seed=0))
    x_adv = apgd_on_cosines(he_model, x, y)
    ```
    """

    OUTPUT = "logits / s"

    def make_view(self, model: Callable) -> Callable:
        return RawOutputModel(model)


class OnFeatureNormalized(OnView):
    """Runs an attack on `FeatureNormalizedModel(model)`: FN in the adversarial objective.

    Args:
        attack: Any `Attack`; its objective is computed on the FN logits,
            its adversarial examples are scored on the model itself.

    Example:

    ```python
    pgd2_fn = OnFeatureNormalized(ProjectedGradientAttack(0.2, 0.1, 2, random_start="zero"))
    x_adv = pgd2_fn(standard_model, x, y)
    ```
    """

    OUTPUT = "FN logits"

    def make_view(self, model: Callable) -> Callable:
        return FeatureNormalizedModel(model)

    def prepare(self, view: Callable, x: tf.Tensor) -> None:
        view.set_reference(x)
