"""Losses for training and attacking classifiers with or without an HE head.

Every function here maps logits to a *per-example* loss of shape
`(batch_size,)` computed in float32 (logits of any float dtype are cast
first). They use `keras.ops` only, so they run on every Keras 3 backend;
under TensorFlow they take and return `tf.Tensor`s and trace into a
`tf.function` like the TensorFlow ops they dispatch to. The TensorFlow
trainers reduce them with `tf.nn.compute_average_loss` so that the reduction
is right under `tf.distribute`; attacks maximize them.

Attack objectives share one signature, `objective(y, logits, reference)`,
where `reference` holds the clean logits (used by the TRADES KL objective and
ignored by the others); `get_objective(name)` resolves a name to one.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import keras
from keras import ops

from he_keras.defaults import DEFAULT_MARGIN, DEFAULT_SCALE

Objective = Callable[[Any, Any, Any], Any]


def _f32(t: Any) -> Any:
    return ops.cast(t, "float32")


def _one_hot(y: Any, logits: Any) -> Any:
    return ops.one_hot(ops.cast(y, "int32"), ops.shape(logits)[-1])


def cross_entropy(y: Any, logits: Any) -> Any:
    """Sparse softmax cross-entropy (log-sum-exp with max subtraction).

    Computed on exactly the tensor given: Keras'
    `sparse_categorical_crossentropy(from_logits=True)` swaps the output of a
    Keras softmax (a tensor carrying `_keras_logits`) for the hidden
    pre-softmax logits, which would attack another function than the model's
    output, so the loss is taken on a copy that carries no such attribute.
    The copy keeps the backend's fused softmax cross-entropy and its
    numerics (a `logsumexp(z) - z_y` graph gave other gradients on a
    saturated, x1e4-scaled model).

    Args:
        y: Integer labels, shape `(batch_size,)`.
        logits: Logits, shape `(batch_size, classes)`.

    Returns:
        Per-example loss, shape `(batch_size,)`, float32.
    """
    return ops.sparse_categorical_crossentropy(
        ops.cast(y, "int32"), ops.copy(_f32(logits)), from_logits=True
    )


def margin_cross_entropy(y: Any, logits: Any, offset: Any) -> Any:
    """Cross-entropy after subtracting `offset` from the true-class logit.

    With HE logits `s*cos(theta)` and `offset = s*m` this is the CosFace-style
    HE loss `CE(s*(cos(theta) - m*1_y))` (Eq. 6 of the HE paper); with m-HE
    logits `-s*theta` it is the additive angular margin `CE(-s*(theta + m*1_y))`.

    Args:
        y: Integer labels, shape `(batch_size,)`.
        logits: Logits, shape `(batch_size, classes)`.
        offset: Scalar (float, tensor or variable), the amount `s*m`
            subtracted from the true class.

    Returns:
        Per-example loss, shape `(batch_size,)`, float32.
    """
    logits = _f32(logits)
    return cross_entropy(y, logits - _f32(offset) * _one_hot(y, logits))


def kl_divergence(reference_logits: Any, logits: Any) -> Any:
    """`KL(softmax(reference) || softmax(logits))` per example (TRADES).

    Args:
        reference_logits: Clean logits, shape `(batch_size, classes)`.
        logits: Logits of the perturbed input, same shape.

    Returns:
        Per-example KL divergence, shape `(batch_size,)`, float32.
    """
    log_p = ops.log_softmax(_f32(reference_logits), axis=-1)
    log_q = ops.log_softmax(_f32(logits), axis=-1)
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def _true_and_best_other(y: Any, logits: Any) -> tuple[Any, Any]:
    logits = _f32(logits)
    onehot = _one_hot(y, logits)
    true = ops.sum(onehot * logits, axis=-1)
    other = ops.max(logits - 1e9 * onehot, axis=-1)
    return true, other


def cw_margin(y: Any, logits: Any, kappa: float = float("inf")) -> Any:
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
    return ops.minimum(other - true, kappa)


def dlr(y: Any, logits: Any) -> Any:
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
    top, _ = ops.top_k(_f32(logits), k=3)
    return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(y: Any, logits: Any, target: Any) -> Any:
    """Targeted DLR loss `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12)`.

    Args:
        y: Integer labels, shape `(batch_size,)`.
        logits: Logits, shape `(batch_size, classes)`, at least 4 classes.
        target: Integer target classes, shape `(batch_size,)`.

    Returns:
        Per-example loss, shape `(batch_size,)`, float32 (maximize it).
    """
    logits = _f32(logits)
    true = ops.sum(_one_hot(y, logits) * logits, axis=-1)
    tgt = ops.sum(_one_hot(target, logits) * logits, axis=-1)
    top, _ = ops.top_k(logits, k=4)
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
    for large `s` under the `mixed_float16` policy. Written with `keras.ops`,
    it trains on every Keras 3 backend.

    To keep the margin right while a schedule changes the head's scale
    between epochs (HE-LIS / HE-CMP), pass the head's `scale` variable as `s`:
    the loss then reads the scale inside the compiled train step (on JAX it
    is part of the model state the step receives), so nothing is retraced.
    The variable must belong to the model being trained. A saved config holds
    the scale's value at saving time, as a float.

    Args:
        m: Non-negative float, the margin.
        s: The scale of the head the logits come from: a positive float, or
            the head's scalar `scale` variable.
        reduction: Keras loss reduction.
        name: Name of the loss.
        dtype: Dtype of the loss computation (float32 by default).

    Example:

    ```python
    model.compile(optimizer="sgd", loss=CosineMarginLoss(m=0.2, s=15.0))
    # Margin that follows a scale schedule of the head:
    head = model.layers[-1]
    model.compile(optimizer="sgd", loss=CosineMarginLoss(m=0.2, s=head.scale))
    ```
    """

    def __init__(
        self,
        m: float = DEFAULT_MARGIN["he"],
        s: Union[float, keras.Variable] = DEFAULT_SCALE,
        reduction: str = "sum_over_batch_size",
        name: str = "cosine_margin_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not m >= 0:
            raise ValueError(f"`m` must be >= 0. Received: m={m!r}")
        self.m = float(m)
        if isinstance(s, keras.Variable):
            if tuple(s.shape) != ():
                raise ValueError(
                    f"`s` must be a scalar variable. Received: s.shape={s.shape}"
                )
            self.scale = s
        else:
            self.scale = float(s)
        if not self.s > 0:
            raise ValueError(f"`s` must be > 0. Received: s={s!r}")

    @property
    def s(self) -> float:
        """The current scale, as a Python float."""
        return float(ops.convert_to_numpy(self.scale))

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true = ops.reshape(y_true, (-1,))
        return margin_cross_entropy(y_true, y_pred, _f32(self.scale) * self.m)

    def get_config(self) -> dict:
        return {**super().get_config(), "m": self.m, "s": self.s}
