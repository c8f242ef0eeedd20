"""CosineMarginLoss and the per-example losses."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from he_keras import CosineMarginLoss, losses


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_margin_loss_matches_hand_computation():
    cos = np.array([[0.9, 0.1, -0.3], [0.2, 0.5, 0.4]], "float32")
    y = np.array([0, 2])
    s, m = 15.0, 0.2
    shifted = s * cos.copy()
    shifted[np.arange(2), y] -= s * m
    expected = -_log_softmax(shifted)[np.arange(2), y].mean()
    loss = CosineMarginLoss(m=m, s=s)(y, s * cos)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_zero_margin_is_plain_cross_entropy():
    logits = np.random.default_rng(0).normal(size=(8, 10)).astype("float32") * 15
    y = np.arange(8)
    ce = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    assert float(CosineMarginLoss(m=0.0, s=15.0)(y, logits)) == pytest.approx(float(ce), rel=1e-6)


def test_finite_at_s64_in_float16():
    s = 64.0
    cos = tf.constant([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.99]], tf.float16)
    y = np.array([1, 0])
    logits = tf.cast(s, tf.float16) * cos
    loss = CosineMarginLoss(m=0.35, s=s)(y, logits)
    assert np.isfinite(float(loss))
    assert float(loss) > 100.0  # both examples are confidently wrong


def test_margin_raises_true_class_loss():
    logits = tf.constant([[3.0, 1.0, 0.0]])
    y = tf.constant([0])
    plain = losses.cross_entropy(y, logits)
    margin = losses.margin_cross_entropy(y, logits, 2.0)
    assert float(margin[0]) > float(plain[0])


def test_kl_is_zero_on_itself_and_positive_otherwise():
    z = tf.constant([[1.0, 2.0, 3.0]])
    assert float(losses.kl_divergence(z, z)[0]) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.kl_divergence(z, z[:, ::-1])[0]) > 0.1


def test_dlr_is_scale_and_shift_invariant():
    z = tf.constant([[2.0, 1.0, 0.5, -1.0], [0.1, 0.3, 0.2, 0.0]])
    y = tf.constant([0, 2])
    base = losses.dlr(y, z).numpy()
    np.testing.assert_allclose(losses.dlr(y, 37.0 * z + 5.0).numpy(), base, rtol=1e-5)
    t = tf.constant([3, 1])
    np.testing.assert_allclose(
        losses.targeted_dlr(y, 9.0 * z - 2.0, t).numpy(), losses.targeted_dlr(y, z, t).numpy(), rtol=1e-5
    )


def test_cw_margin_sign():
    z = tf.constant([[3.0, 1.0], [0.0, 2.0]])
    y = tf.constant([0, 0])
    np.testing.assert_allclose(losses.cw_margin(y, z).numpy(), [-2.0, 2.0])
    np.testing.assert_allclose(losses.cw_margin(y, z, kappa=1.0).numpy(), [-2.0, 1.0])


def test_loss_config_round_trip():
    loss = CosineMarginLoss(m=0.3, s=20.0)
    clone = CosineMarginLoss.from_config(loss.get_config())
    assert (clone.m, clone.s) == (0.3, 20.0)


@pytest.mark.parametrize("bad", [dict(m=-0.1), dict(s=0.0)])
def test_invalid_loss_arguments(bad):
    with pytest.raises(ValueError, match="Received"):
        CosineMarginLoss(**bad)


def test_unknown_objective():
    with pytest.raises(ValueError, match="nope"):
        losses.get_objective("nope")


def test_cross_entropy_acts_on_the_given_tensor_even_after_a_keras_softmax():
    # A model that outputs probabilities must be attacked on what it outputs:
    # Keras' from_logits CE would quietly swap in the hidden pre-softmax logits.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    y = np.array([0, 1, 2, 0, 1])
    probs = model(x)
    z = np.asarray(probs, np.float64)
    expected = np.log(np.exp(z).sum(-1)) - z[np.arange(5), y]
    np.testing.assert_allclose(np.asarray(losses.cross_entropy(y, probs)), expected, rtol=1e-5)
    traced = tf.function(lambda v: losses.cross_entropy(y, model(v)))
    np.testing.assert_allclose(np.asarray(traced(x)), expected, rtol=1e-5)
