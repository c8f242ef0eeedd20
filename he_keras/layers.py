"""Hypersphere-embedding (HE) classification heads.

The HE head of Pang et al., "Boosting Adversarial Training with Hypersphere
Embedding" (NeurIPS 2020, https://arxiv.org/abs/2002.08619) normalizes the
penultimate features (FN, Eq. 4) and the softmax weight columns (WN, Eq. 4),
so that the logits become `s * cos(theta)` (Eq. 5). The modified head m-HE
(Sec. 3.5) replaces `cos(theta)` by `-theta`.

Both heads output *logits* (the scale `s` is applied inside the layer), so the
softmax of a deployed model is meaningful and every attack sees the logits the
user serves. The unscaled quantity (`cos(theta)` for HE, `-theta` for m-HE) is
`logits / layer.scale`, and `cosine()` returns the raw cosines for both heads.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from he_keras.defaults import DEFAULT_SCALE

# Cosines are clipped this far inside [-1, 1] before arccos so that the
# gradient of arccos, -1/sqrt(1 - c^2), stays finite.
_ARCCOS_CLIP = 1e-6


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")


@keras.saving.register_keras_serializable(package="he_keras")
class HypersphereDense(keras.layers.Layer):
    """Dense head without bias whose logits are `s * cos(theta)`.

    With `feature_norm=True` the input features `z` are L2-normalized per
    example; with `weight_norm=True` each kernel column `W_j` is L2-normalized
    in the forward pass (a differentiable reparameterization, so it is exact
    under `tf.distribute`). With both on, `logits_j = s * cos(angle(W_j, z))`.
    Turning one switch off gives the FN-only / WN-only ablations of the paper.

    The scale `s` is a non-trainable variable (`layer.scale`), so temperature
    schedules (HE-LIS, HE-CMP) can change it between epochs without retracing,
    and it is saved with the model.

    Args:
        units: Positive int, number of classes.
        s: Positive float, the scale (inverse temperature) of the logits.
        feature_norm: Whether to L2-normalize the input features (FN).
        weight_norm: Whether to L2-normalize the kernel columns (WN).
        kernel_initializer: Initializer for the kernel.
        kernel_regularizer: Optional regularizer for the kernel.
        epsilon: Small positive float added under the square roots of the
            norms, so that a zero feature vector gives zero logits, not NaN.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Input shape:
        `(batch_size, features)`.

    Output shape:
        `(batch_size, units)`.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        HypersphereDense(10, s=15),
    ])
    ```
    """

    def __init__(
        self,
        units: int,
        s: float = DEFAULT_SCALE,
        feature_norm: bool = True,
        weight_norm: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        kernel_regularizer: Any = None,
        epsilon: float = 1e-12,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units < 1:
            raise ValueError(
                f"`units` must be a positive integer. Received: units={units!r}"
            )
        _check_positive("s", s)
        _check_positive("epsilon", epsilon)
        self.units = units
        self.s = float(s)
        self.feature_norm = bool(feature_norm)
        self.weight_norm = bool(weight_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.epsilon = float(epsilon)
        self.scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.s),
            trainable=False,
            name="scale",
            dtype="float32",
        )

    def build(self, input_shape: tuple) -> None:
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )

    def cosine(self, inputs: Any) -> Any:
        """Returns the raw, unscaled output `W~^T z~` (float32).

        With both normalizations on this is `cos(theta)` in [-1, 1].

        Args:
            inputs: Features of shape `(batch_size, features)`.

        Returns:
            A float32 tensor of shape `(batch_size, units)`.
        """
        z = ops.cast(inputs, "float32")
        w = ops.cast(self.kernel, "float32")
        if self.feature_norm:
            z = z * ops.rsqrt(
                ops.sum(ops.square(z), axis=-1, keepdims=True) + self.epsilon
            )
        if self.weight_norm:
            w = w * ops.rsqrt(
                ops.sum(ops.square(w), axis=0, keepdims=True) + self.epsilon
            )
        return ops.matmul(z, w)

    def angular_output(self, cosine: Any) -> Any:
        """Maps the raw cosines to the unscaled logits (`cos(theta)` here)."""
        return cosine

    def call(self, inputs: Any) -> Any:
        unscaled = self.angular_output(self.cosine(inputs))
        return ops.cast(self.scale * unscaled, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "s": self.s,
            "feature_norm": self.feature_norm,
            "weight_norm": self.weight_norm,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(
                self.kernel_regularizer
            ),
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="he_keras")
class ArcCosLogits(HypersphereDense):
    """m-HE head: logits `s * (-theta)` with `theta = arccos(cos(theta))`.

    Sec. 3.5 of the HE paper substitutes `S(cos theta)` by `S(-theta)` so that
    strong adversarial examples (large angle to their class) keep a large
    weight in training. This is a head layer of its own (a `HypersphereDense`
    whose output passes through `-arccos`), so it drops into any model where a
    `HypersphereDense` would. Cosines are clipped to
    `[-1 + 1e-6, 1 - 1e-6]` before `arccos`, which keeps gradients finite at
    `cos(theta) = +-1`. Logits lie in `[-s*pi, 0]`.

    Args:
        units: Positive int, number of classes.
        s: Positive float, the scale of the logits.
        **kwargs: Any other `HypersphereDense` argument.

    Input shape:
        `(batch_size, features)`.

    Output shape:
        `(batch_size, units)`.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        ArcCosLogits(10, s=15),
    ])
    ```
    """

    def angular_output(self, cosine: Any) -> Any:
        """Maps the raw cosines to `-theta`."""
        clipped = ops.clip(cosine, -1.0 + _ARCCOS_CLIP, 1.0 - _ARCCOS_CLIP)
        return -ops.arccos(clipped)
