"""Losses for training and attacking classifiers with or without an HE head.

Every function here maps logits to a *per-example* loss of shape
`(batch_size,)` computed in float32 (logits of any float dtype are cast
first). Trainers reduce these with `tf.nn.compute_average_loss` so that the
reduction is right under `tf.distribute`; attacks maximize them.

Attack objectives share one signature, `objective(y, logits, reference)`,
where `reference` holds the clean logits (used by the TRADES KL objective and
ignored by the others); `get_objective(name)` resolves a name to one.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from he_keras.defaults import DEFAULT_MARGIN, DEFAULT_SCALE

Objective = Callable[[tf.Tensor, tf.Tensor, Any], tf.Tensor]


def _f32(t: Any) -> tf.Tensor:
    return tf.cast(t, tf.float32)


def cross_entropy(y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Sparse softmax cross-entropy (log-sum-exp with max subtraction).

    Args:
        y: Integer labels, shape `(batch_size,)`.
        logits: Logits, shape `(batch_size, classes)`.

    Returns:
        Per-example loss, shape `(batch_size,)`, float32.
    """
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(y, tf.int32), logits=_f32(logits)
    )


def margin_cross_entropy(
    y: tf.Tensor, logits: tf.Tensor, offset: Any
) -> tf.Tensor:
    """Cross-entropy after subtracting `offset` from the true-class logit.

    With HE logits `s*cos(theta)` and `offset = s*m` this is the CosFace-style
    HE loss `CE(s*(cos(theta) - m*1_y))` (Eq. 6 of the HE paper); with m-HE
    logits `-s*theta` it is the additive angular margin `CE(-s*(theta + m*1_y))`.

    Args:
        y: Integer labels, shape `(batch_size,)`.
        logits: Logits, shape `(batch_size, classes)`.
        offset: Scalar, the amount `s*m` subtracted from the true class.

    Returns:
        Per-example loss, shape `(batch_size,)`, float32.
    """
    logits = _f32(logits)
    onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1])
    return cross_entropy(y, logits - _f32(offset) * onehot)


def kl_divergence(reference_logits: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """`KL(softmax(reference) || softmax(logits))` per example (TRADES).

    Args:
        reference_logits: Clean logits, shape `(batch_size, classes)`.
        logits: Logits of the perturbed input, same shape.

    Returns:
        Per-example KL divergence, shape `(batch_size,)`, float32.
    """
    log_p = tf.nn.log_softmax(_f32(reference_logits))
    log_q = tf.nn.log_softmax(_f32(logits))
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def _true_and_best_other(
    y: tf.Tensor, logits: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    logits = _f32(logits)
    onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1])
    true = tf.reduce_sum(onehot * logits, axis=-1)
    other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    return true, other


def cw_margin(
    y: tf.Tensor, logits: tf.Tensor, kappa: float = float("inf")
) -> tf.Tensor:
    """Carlini-Wagner margin `max_{j!=y} z_j - z_y`, capped above at `kappa`.

    Positive exactly when the example is misclassified. Maximized by CW-Linf;
    the cap (confidence) stops pushing an example once it is misclassified by
    `kappa` (the TRADES evaluation uses 50; the default is no cap).

    Args:
        y: Integer labels, shape `(batch_size,)`.
        logits: Logits, shape `(batch_size, classes)`.
        kappa: Confidence; the loss stops growing once the margin reaches it.

    Returns:
        Per-example margin, shape `(batch_size,)`, float32.
    """
    true, other = _true_and_best_other(y, logits)
    return tf.minimum(other - true, kappa)


def dlr(y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Untargeted Difference-of-Logits-Ratio loss of Croce & Hein (2020).

    `-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3 + 1e-12)`, invariant to shifting
    and positive scaling of the logits (so the HE scale `s` cannot hide
    anything from it). Needs at least 3 classes.

    Args:
        y: Integer labels, shape `(batch_size,)`.
        logits: Logits, shape `(batch_size, classes)`.

    Returns:
        Per-example loss, shape `(batch_size,)`, float32.
    """
    true, other = _true_and_best_other(y, logits)
    top = tf.math.top_k(_f32(logits), k=3).values
    return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(y: tf.Tensor, logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Targeted DLR loss `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12)`.

    Args:
        y: Integer labels, shape `(batch_size,)`.
        logits: Logits, shape `(batch_size, classes)`, at least 4 classes.
        target: Integer target classes, shape `(batch_size,)`.

    Returns:
        Per-example loss, shape `(batch_size,)`, float32 (maximize it).
    """
    logits = _f32(logits)
    classes = tf.shape(logits)[-1]
    true = tf.reduce_sum(tf.one_hot(tf.cast(y, tf.int32), classes) * logits, -1)
    tgt = tf.reduce_sum(tf.one_hot(tf.cast(target, tf.int32), classes) * logits, -1)
    top = tf.math.top_k(logits, k=4).values
    return -(true - tgt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def get_objective(name: str, **params: Any) -> Objective:
    """Resolves an attack objective by name.

    Args:
        name: One of `"ce"`, `"cw"`, `"dlr"`, `"kl"`, `"temperature_ce"`,
            `"margin_ce"`.
        **params: `kappa` for `"cw"`, `temperature` for `"temperature_ce"`,
            `offset` for `"margin_ce"`.

    Returns:
        A callable `(y, logits, reference_logits) -> per-example loss`.

    Example:

    >>> objective = get_objective("temperature_ce", temperature=0.1)
    """
    if name == "ce":
        return lambda y, z, ref: cross_entropy(y, z)
    if name == "cw":
        kappa = float(params.get("kappa", float("inf")))
        return lambda y, z, ref: cw_margin(y, z, kappa)
    if name == "dlr":
        return lambda y, z, ref: dlr(y, z)
    if name == "kl":
        return lambda y, z, ref: kl_divergence(ref, z)
    if name == "temperature_ce":
        temperature = float(params["temperature"])
        if not temperature > 0:
            raise ValueError(
                f"`temperature` must be > 0. Received: temperature={temperature}"
            )
        return lambda y, z, ref: cross_entropy(y, _f32(z) / temperature)
    if name == "margin_ce":
        offset = params["offset"]
        return lambda y, z, ref: margin_cross_entropy(y, z, offset)
    raise ValueError(
        "Unknown attack objective. Expected one of ce, cw, dlr, kl, "
        f"temperature_ce, margin_ce. Received: name={name!r}"
    )


@keras.saving.register_keras_serializable(package="he_keras")
class CosineMarginLoss(keras.losses.Loss):
    """HE training loss: cross-entropy with `s*m` taken off the true logit.

    Applied to the logits of a `HypersphereDense` head (`s*cos(theta)`) this is
    `CE(s*(cos(theta) - m*1_y))`; applied to an `ArcCosLogits` head
    (`-s*theta`) it is the additive angular margin loss of m-HE. `s` must be
    the head's scale. With `m=0` it equals plain cross-entropy on the logits.
    Computed in float32 with a max-subtracted log-sum-exp, so it stays finite
    for large `s` under the `mixed_float16` policy.

    Args:
        m: Non-negative float, the margin.
        s: Positive float, the scale of the head the logits come from.
        reduction: Keras loss reduction.
        name: Name of the loss.
        dtype: Dtype of the loss computation (float32 by default).

    Example:

    ```python
    model.compile(optimizer="sgd", loss=CosineMarginLoss(m=0.2, s=15.0))
    ```
    """

    def __init__(
        self,
        m: float = DEFAULT_MARGIN["he"],
        s: float = DEFAULT_SCALE,
        reduction: str = "sum_over_batch_size",
        name: str = "cosine_margin_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not m >= 0:
            raise ValueError(f"`m` must be >= 0. Received: m={m!r}")
        if not s > 0:
            raise ValueError(f"`s` must be > 0. Received: s={s!r}")
        self.m = float(m)
        self.s = float(s)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true = tf.reshape(y_true, [-1])
        return margin_cross_entropy(y_true, y_pred, self.s * self.m)

    def get_config(self) -> dict:
        return {**super().get_config(), "m": self.m, "s": self.s}
