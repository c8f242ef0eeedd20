"""Scale (inverse temperature) schedules of the HE head: HE-LIS and HE-CMP.

Appendix G of "Intriguing class-wise properties of adversarial training"
(seed paper 003) argues that the scale `s = 1/T` of an HE head, not FN/WN,
drives the robustness gain, and proposes to grow it during training:

- LIS (linear interpolation schedule, Eq. 5): `1/T_n = 1/T_0 + n / n_FI *
  (1/T_FI - 1/T_0)` with `1/T_0 = 1`, `1/T_FI = 75`, `n_FI = n_tot`.
- CMP (control maximum probability, Eq. 6): each epoch, solve Eq. 3 for the
  `1/T` that makes the mean maximum softmax probability equal
  `P_n = P_0 + n / n_FI * (P_FI - P_0)` (`P_0 = 0.2`, `P_FI = 1`,
  `n_FI = 0.9 n_tot`), and `P_n = 1` afterwards.

Both are Keras callbacks that assign the head's non-trainable `scale`
variable at the start of every epoch (epoch `n` counts from 0, as in Eq. 6),
so they work with any framework whose classifier has an HE or m-HE head. The
paper trains them without angular margin (`m = 0`).
"""

from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np
import scipy.optimize
import tensorflow as tf

from he_keras.models.heads import find_head


def _check_epochs(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    return int(value)


def interpolate(epoch: int, start: float, end: float, interpolation_epochs: int) -> float:
    """`start + n / n_FI * (end - start)` for `n < n_FI`, `end` afterwards."""
    fraction = min(epoch, interpolation_epochs) / interpolation_epochs
    return start + fraction * (end - start)


class _ScaleSchedule(keras.callbacks.Callback):
    """Sets the HE head's scale to `scale_at(epoch)` when each epoch begins.

    `trajectory` records `(epoch, scale)` of every epoch run; the scale is
    also logged as `he_scale`.
    """

    def scale_at(self, epoch: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} must implement scale_at(epoch)")

    def head(self) -> Any:
        """The HE / m-HE head of the model's classifier."""
        classifier = getattr(self.model, "classifier", self.model)
        head = find_head(classifier)
        if head is None:
            raise ValueError(
                f"{type(self).__name__} needs a classifier with an HE or m-HE head "
                f"(HypersphereDense / ArcCosLogits). Received: {classifier.name!r} "
                "with a linear head"
            )
        return head

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        scale = self.scale_at(epoch)
        self.head().scale.assign(scale)
        self.trajectory.append((int(epoch), float(scale)))

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if logs is not None:
            logs["he_scale"] = float(self.head().scale.numpy())

    @classmethod
    def from_config(cls, config: dict) -> "_ScaleSchedule":
        return cls(**config)


@keras.saving.register_keras_serializable(package="he_keras")
class LinearScaleSchedule(_ScaleSchedule):
    """HE-LIS: the head's scale `1/T` grows linearly over the epochs.

    Epoch `n` (from 0) trains with
    `initial_scale + min(n, n_FI) / n_FI * (final_scale - initial_scale)`.

    Args:
        interpolation_epochs: `n_FI`, the epochs of the interpolation (the
            paper: all training epochs).
        initial_scale: `1/T_0` (1 in the paper).
        final_scale: `1/T_FI` (75 in the paper).

    Example:

    ```python
    trainer.fit(data, epochs=100, callbacks=[LinearScaleSchedule(100)])
    ```
    """

    def __init__(
        self,
        interpolation_epochs: int,
        initial_scale: float = 1.0,
        final_scale: float = 75.0,
    ) -> None:
        super().__init__()
        self.interpolation_epochs = _check_epochs("interpolation_epochs", interpolation_epochs)
        for name, value in (("initial_scale", initial_scale), ("final_scale", final_scale)):
            if not float(value) > 0:
                raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
        self.initial_scale = float(initial_scale)
        self.final_scale = float(final_scale)
        self.trajectory: list = []

    def scale_at(self, epoch: int) -> float:
        """The scale of epoch `epoch` (Eq. 5)."""
        return interpolate(
            epoch, self.initial_scale, self.final_scale, self.interpolation_epochs
        )

    def get_config(self) -> dict:
        return {
            "interpolation_epochs": self.interpolation_epochs,
            "initial_scale": self.initial_scale,
            "final_scale": self.final_scale,
        }


def mean_max_probability(unscaled_logits: np.ndarray, scale: float) -> float:
    """Mean over examples of `max_j softmax(scale * unscaled_logits)_j`.

    Non-decreasing in `scale` (each example's top probability is
    `1 / sum_k exp(scale (z_k - z_max))` and every exponent is <= 0).

    Args:
        unscaled_logits: Raw `cos(theta)` (HE) or `-theta` (m-HE), shape
            `(examples, classes)`.
        scale: The scale `s = 1/T` >= 0.

    Returns:
        The mean maximum probability, in `[1/classes, 1]`.
    """
    z = np.asarray(unscaled_logits, np.float64)
    gaps = scale * (z - z.max(axis=1, keepdims=True))
    return float(np.mean(1.0 / np.exp(gaps).sum(axis=1)))


def solve_scale(
    unscaled_logits: np.ndarray,
    target: float,
    min_scale: float,
    max_scale: float,
) -> float:
    """The scale whose mean maximum probability equals `target`.

    Brent's method on `log(scale)` over `[min_scale, max_scale]` (the mean
    maximum probability is monotone in the scale, so the root is unique);
    returns the bound when the target lies outside the reachable range (e.g.
    `target = 1`, reached only as the scale goes to infinity, gives
    `max_scale`).

    Args:
        unscaled_logits: Raw `cos(theta)` / `-theta`, `(examples, classes)`.
        target: Wanted mean maximum probability.
        min_scale: Smallest scale returned (> 0).
        max_scale: Largest scale returned.

    Returns:
        The scale, a float in `[min_scale, max_scale]`.
    """
    def gap(log_scale: float) -> float:
        return mean_max_probability(unscaled_logits, float(np.exp(log_scale))) - target

    low, high = np.log(min_scale), np.log(max_scale)
    if gap(low) >= 0:
        return float(min_scale)
    if gap(high) <= 0:
        return float(max_scale)
    return float(np.exp(scipy.optimize.brentq(gap, low, high, xtol=1e-10)))


@keras.saving.register_keras_serializable(package="he_keras")
class MaxProbabilityScaleSchedule(_ScaleSchedule):
    """HE-CMP: choose the scale that sets the mean maximum probability.

    At the start of epoch `n` (from 0) the classifier's unscaled outputs
    (`cos(theta)` / `-theta`, inference mode) on a fixed sample of clean
    training images are computed, and the scale is solved (Brent's method)
    so that the mean maximum softmax probability equals
    `initial_probability + min(n, n_FI) / n_FI * (final_probability -
    initial_probability)`; from epoch `n_FI` on the target is
    `final_probability`. A target of 1 is reached only in the limit, so the
    scale is capped at `max_scale`.

    Args:
        x: The fixed sample of training images, shape `(examples, ...)`.
        interpolation_epochs: `n_FI` (the paper: 90 % of the epochs).
        initial_probability: `P_0` (0.2 in the paper).
        final_probability: `P_FI` (1 in the paper).
        min_scale: Lower bound of the solved scale.
        max_scale: Upper bound of the solved scale (used when `P >= ` the
            probability reachable at it, e.g. `P = 1`).
        batch_size: Batch size of the forward passes.

    Example:

    ```python
    cmp = MaxProbabilityScaleSchedule(x_train[:1024], interpolation_epochs=90)
    trainer.fit(data, epochs=100, callbacks=[cmp])
    ```
    """

    def __init__(
        self,
        x: Any,
        interpolation_epochs: int,
        initial_probability: float = 0.2,
        final_probability: float = 1.0,
        min_scale: float = 1e-2,
        max_scale: float = 100.0,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        x = np.asarray(x, np.float32)
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(
                f"`x` must be a non-empty batch of images. Received shape={x.shape}"
            )
        self.interpolation_epochs = _check_epochs("interpolation_epochs", interpolation_epochs)
        for name, value in (
            ("initial_probability", initial_probability),
            ("final_probability", final_probability),
        ):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"`{name}` must lie in (0, 1]. Received: {name}={value!r}")
        if not 0.0 < float(min_scale) < float(max_scale):
            raise ValueError(
                "Need 0 < min_scale < max_scale. "
                f"Received: min_scale={min_scale!r}, max_scale={max_scale!r}"
            )
        self.x = x
        self.initial_probability = float(initial_probability)
        self.final_probability = float(final_probability)
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.batch_size = _check_epochs("batch_size", batch_size)
        self.trajectory: list = []

    def target_probability(self, epoch: int) -> float:
        """`P_n` of Eq. 6."""
        return interpolate(
            epoch,
            self.initial_probability,
            self.final_probability,
            self.interpolation_epochs,
        )

    def unscaled_logits(self) -> np.ndarray:
        """Raw `cos(theta)` / `-theta` of the sample under the current weights."""
        classifier = getattr(self.model, "classifier", self.model)
        scale = self.head().scale
        outputs = [
            tf.cast(classifier(self.x[i : i + self.batch_size], training=False), tf.float32)
            / scale
            for i in range(0, len(self.x), self.batch_size)
        ]
        return tf.concat(outputs, 0).numpy()

    def scale_at(self, epoch: int) -> float:
        """The scale of epoch `epoch` (solves Eq. 3 for `P_n` of Eq. 6)."""
        return solve_scale(
            self.unscaled_logits(),
            self.target_probability(epoch),
            self.min_scale,
            self.max_scale,
        )

    def get_config(self) -> dict:
        return {
            "x": self.x.tolist(),
            "interpolation_epochs": self.interpolation_epochs,
            "initial_probability": self.initial_probability,
            "final_probability": self.final_probability,
            "min_scale": self.min_scale,
            "max_scale": self.max_scale,
            "batch_size": self.batch_size,
        }


# Training images CMP solves the scale on (a fixed sample, clean).
CMP_SAMPLE_SIZE = 1024
# Fraction of the epochs over which CMP interpolates (90 of 100 in the paper).
CMP_INTERPOLATION_FRACTION = 0.9


def he_lis_callback(config: Any, trainer: keras.Model, data: Any) -> LinearScaleSchedule:
    """`--callbacks=he_lis`: LIS from 1 to 75 over all `config.epochs`."""
    return LinearScaleSchedule(interpolation_epochs=config.epochs)


def he_cmp_callback(
    config: Any, trainer: keras.Model, data: Any
) -> MaxProbabilityScaleSchedule:
    """`--callbacks=he_cmp`: CMP 0.2 -> 1 over 90 % of `config.epochs`."""
    from he_keras.data import to_numpy

    x, _ = to_numpy(data.probe_pool, CMP_SAMPLE_SIZE)
    epochs = max(1, round(CMP_INTERPOLATION_FRACTION * config.epochs))
    return MaxProbabilityScaleSchedule(x, interpolation_epochs=epochs)
