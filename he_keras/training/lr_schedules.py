"""Learning-rate schedules Keras lacks (one-cycle / triangular) and a factory."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

LR_SCHEDULES = ("constant", "piecewise", "cosine", "onecycle")


@keras.saving.register_keras_serializable(package="he_keras")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear interpolation between `(step, value)` knots, constant outside.

    `PiecewiseLinear([0, 500, 1000], [0.0, 0.2, 0.0])` is the triangular
    (cyclic) schedule of FastAT; knots `[0, 0.25*T, T]` with values
    `[max/25, max, 0]` approximate one-cycle.

    Args:
        boundaries: Increasing optimizer steps of the knots.
        values: Learning rate at each knot.

    Example:

    ```python
    optimizer = keras.optimizers.SGD(PiecewiseLinear([0, 50, 100], [0, 0.2, 0]))
    ```
    """

    def __init__(self, boundaries: Sequence[float], values: Sequence[float]) -> None:
        if len(boundaries) != len(values) or len(boundaries) < 2:
            raise ValueError(
                "`boundaries` and `values` need the same length >= 2. "
                f"Received: boundaries={list(boundaries)}, values={list(values)}"
            )
        if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])):
            raise ValueError(
                f"`boundaries` must increase. Received: boundaries={list(boundaries)}"
            )
        self.boundaries = [float(b) for b in boundaries]
        self.values = [float(v) for v in values]

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        knots = tf.constant(self.boundaries)
        values = tf.constant(self.values)
        clipped = tf.clip_by_value(step, knots[0], knots[-1])
        idx = tf.clip_by_value(
            tf.searchsorted(knots, tf.reshape(clipped, [1]), side="right")[0] - 1,
            0,
            len(self.boundaries) - 2,
        )
        t = (clipped - knots[idx]) / (knots[idx + 1] - knots[idx])
        return values[idx] + t * (values[idx + 1] - values[idx])

    def get_config(self) -> dict:
        return {"boundaries": self.boundaries, "values": self.values}


def make_lr_schedule(
    kind: str,
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    decay_epochs: Sequence[float] = (),
    decay_factor: float = 0.1,
):
    """Builds the learning rate (a float or a schedule over optimizer steps).

    Args:
        kind: `constant`; `piecewise` (multiply by `decay_factor` at each of
            `decay_epochs`, the HE paper's 0.1 -> x0.1 at 75 and 90);
            `cosine` (cosine decay to 0 over training); `onecycle` (linear
            warm-up from lr/25 to lr over the first 25 %, then linear decay to
            0; triangular when used by FastAT).
        lr: Peak / initial learning rate.
        epochs: Number of epochs.
        steps_per_epoch: Optimizer steps per epoch.
        decay_epochs: Epochs of the piecewise decays.
        decay_factor: Multiplier at each piecewise decay.

    Returns:
        A float or a `LearningRateSchedule`.
    """
    total = max(1, epochs * steps_per_epoch)
    if kind == "constant":
        return lr
    if kind == "piecewise":
        bounds = [int(e * steps_per_epoch) for e in decay_epochs]
        if not bounds:
            return lr
        values = [lr * decay_factor**i for i in range(len(bounds) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, total)
    if kind == "onecycle":
        peak = max(1.0, 0.25 * total)
        return PiecewiseLinear([0.0, peak, float(max(total, peak + 1))], [lr / 25, lr, 0.0])
    raise ValueError(f"`lr_schedule` must be one of {LR_SCHEDULES}. Received: {kind!r}")
