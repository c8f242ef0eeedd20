"""HypersphereDense / ArcCosLogits: math, invariances, gradients, saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from he_keras import ArcCosLogits, HypersphereDense
from he_keras.models import build_model


def _numpy_cos(z, w):
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    return zn @ wn


@pytest.fixture
def features():
    return np.random.default_rng(0).normal(size=(16, 12)).astype("float32")


def test_output_is_s_times_cosine(features):
    layer = HypersphereDense(5, s=15.0)
    out = layer(features).numpy()
    expected = 15.0 * _numpy_cos(features, layer.kernel.numpy())
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(layer.cosine(features).numpy(), expected / 15.0, atol=1e-6)


def test_invariant_to_feature_and_weight_scaling(features):
    layer = HypersphereDense(5, s=10.0)
    base = layer(features).numpy()
    np.testing.assert_allclose(layer(3.7 * features).numpy(), base, atol=1e-5)
    kernel = layer.kernel.numpy()
    kernel[:, 2] *= 42.0
    layer.kernel.assign(kernel)
    np.testing.assert_allclose(layer(features).numpy(), base, atol=1e-5)


def test_ablation_switches(features):
    fn_only = HypersphereDense(5, s=1.0, weight_norm=False)
    fn_only.build(features.shape)
    w = fn_only.kernel.numpy()
    zn = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(fn_only(features).numpy(), zn @ w, atol=1e-5)
    wn_only = HypersphereDense(5, s=1.0, feature_norm=False)
    wn_only.build(features.shape)
    w = wn_only.kernel.numpy()
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    np.testing.assert_allclose(wn_only(features).numpy(), features @ wn, atol=1e-5)


def test_scale_is_a_non_trainable_variable(features):
    layer = HypersphereDense(4, s=15.0)
    out = layer(features).numpy()
    assert [v.name for v in layer.non_trainable_weights] == ["scale"]
    assert len(layer.trainable_weights) == 1
    layer.scale.assign(30.0)
    np.testing.assert_allclose(layer(features).numpy(), 2.0 * out, rtol=1e-5)


def test_zero_features_are_finite():
    layer = HypersphereDense(3)
    z = tf.zeros((2, 6))
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = layer(z)
    assert np.all(np.isfinite(out.numpy()))
    assert np.all(np.isfinite(tape.gradient(out, z).numpy()))


def test_arccos_logits_values_and_finite_gradients():
    layer = ArcCosLogits(2, s=2.0, feature_norm=False, weight_norm=False)
    layer.build((None, 2))
    layer.kernel.assign(np.eye(2, dtype="float32"))
    # Rows give cos = +1 / -1 exactly for the first class.
    z = tf.constant([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8]])
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = layer(z)
        total = tf.reduce_sum(out)
    grad = tape.gradient(total, z).numpy()
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(out.numpy()[2], -2.0 * np.arccos([0.6, 0.8]), atol=1e-5)
    assert out.numpy()[1, 0] == pytest.approx(-2.0 * np.pi, abs=1e-2)


@pytest.mark.parametrize("bad", [dict(units=0), dict(units=3, s=0.0), dict(units=3, s=-1.0)])
def test_invalid_arguments(bad):
    with pytest.raises(ValueError, match="Received"):
        HypersphereDense(**bad)


def test_sequential_functional_and_subclassed(features, tmp_path):
    seq = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8), HypersphereDense(10, s=15)])

    inputs = keras.Input((12,))
    func = keras.Model(inputs, ArcCosLogits(10, s=15)(keras.layers.Dense(8)(inputs)))

    class Sub(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.body = keras.layers.Dense(8)
            self.head = HypersphereDense(10, s=15)

        def call(self, x):
            return self.head(self.body(x))

    sub = Sub()
    for model in (seq, func, sub):
        assert model(features).shape == (16, 10)


@pytest.mark.parametrize("head", ["linear", "he", "mhe"])
def test_keras_round_trip_identical_predictions(head, tmp_path):
    model = build_model("small_cnn", (8, 8, 1), 10, head=head, s=12.0)
    x = np.random.default_rng(1).uniform(size=(4, 8, 8, 1)).astype("float32")
    if head != "linear":
        model.get_layer("head").scale.assign(7.0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert loaded.get_layer("head").get_config() == model.get_layer("head").get_config()


def test_mixed_float16_outputs_are_finite(features):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = HypersphereDense(10, s=64.0)
        out = layer(features)
        assert out.dtype == tf.float16
        assert np.all(np.isfinite(out.numpy()))
    finally:
        keras.mixed_precision.set_global_policy("float32")
