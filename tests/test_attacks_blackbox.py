"""Tests of the gradient-free, transfer and cleverhans attacks on the
undefended digits CNN."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import accuracy, digits_arrays, fooled_within_round_off, undefended_digits_model

from he_keras.attacks import (
    APGD,
    NES,
    ZOO,
    CarliniWagnerL2,
    CleverHansAttack,
    RayS,
    Square,
    TransferAttack,
    adbd,
)
from he_keras.models import build_model

EPS = 0.3


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    _, _, x, y = digits_arrays()
    return x[:n], y[:n]


def _assert_in_threat_model(x_adv, x, eps: float) -> None:
    x_adv = np.asarray(x_adv)
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() <= eps + 1e-5


class GradientSpy:
    """Wraps a model and counts every gradient taken through its input."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.gradients = 0

    def __call__(self, x, training: bool = False):
        @tf.custom_gradient
        def watched(t):
            def grad(upstream):
                self.gradients += 1
                return upstream

            return tf.identity(t), grad

        return self.model(watched(x), training=training)


class _NoTape:
    def __init__(self, *args, **kwargs):
        raise AssertionError("a black-box attack opened a GradientTape")


BLACK_BOX = {
    "square": lambda: Square(EPS, n_queries=300, seed=0),
    "nes": lambda: NES(EPS, step_size=0.05, steps=20, samples=32, seed=0),
    "zoo": lambda: ZOO(EPS, steps=20, coords_per_step=64, lr=0.05, seed=0),
    "rays": lambda: RayS(EPS, query_limit=300, seed=0),
    "cleverhans_spsa": lambda: CleverHansAttack(
        "spsa", EPS, step_size=0.05, steps=20, spsa_samples=32, seed=0
    ),
}


@pytest.mark.parametrize("name", sorted(BLACK_BOX))
def test_black_box_attack_breaks_model_without_gradients(name, monkeypatch):
    spy = GradientSpy(undefended_digits_model())  # trains (with a tape) once, cached
    monkeypatch.setattr(tf, "GradientTape", _NoTape)
    n = 8 if name == "cleverhans_spsa" else 32
    x, y = _data(n)
    x_adv = BLACK_BOX[name]()(spy, x, y)
    _assert_in_threat_model(x_adv, x, EPS)
    assert spy.gradients == 0
    assert accuracy(spy.model, x_adv, y) < 0.2


def test_square_queries_only_robust_points_and_stops_early():
    model = undefended_digits_model()
    x, y = _data(64)
    attack = Square(0.1, n_queries=100, seed=0)
    x_adv = attack(model, x, y)
    queries = np.asarray(attack.last_queries)
    fooled = np.argmax(model.predict(np.asarray(x_adv), verbose=0), 1) != y
    assert 0 < fooled.mean() < 1
    # The stripes, then one query per iteration (AutoAttack counts so).
    assert np.all(queries[~fooled] == 101)
    assert np.all(queries[fooled] < 101)
    traces = attack.trace_count
    Square.__call__(attack, model, x, y)
    Square.__call__(attack, model, x[:7], y[:7])  # as a chain hands it its survivors
    assert attack.trace_count == traces == 1
    # At a large eps every image breaks long before the budget.
    attack = Square(EPS, n_queries=1000, seed=0)
    assert accuracy(model, attack(model, x, y), y) == 0.0
    assert np.asarray(attack.last_queries).max() < 1000


def test_rays_distances_bound_white_box_accuracy():
    model = undefended_digits_model()
    x, y = _data(64)
    rays = RayS(0.1, query_limit=200, early_stopping=False)
    x_adv = np.asarray(rays(model, x, y))
    _assert_in_threat_model(x_adv, x, 0.1)
    distances = np.asarray(rays.last_distances)
    clean_correct = np.argmax(model.predict(x, verbose=0), 1) == y
    assert np.all(distances[clean_correct] > 0.0)
    assert np.all(distances[~clean_correct] == 0.0)
    assert np.all(fooled_within_round_off(model, x_adv, y)[distances <= 0.1])
    assert np.all(np.asarray(rays.last_queries) <= 200 + 20)
    assert 0.0 < adbd(distances) < 1.0
    white_box = accuracy(model, APGD(0.1, steps=50, seed=0)(model, x, y), y)
    assert accuracy(model, x_adv, y) >= white_box


@functools.lru_cache(maxsize=None)
def _source_model() -> keras.Model:
    """A substitute digits CNN trained like the target but from seed 1."""
    x, y, _, _ = digits_arrays()
    keras.utils.set_random_seed(1)
    model = build_model("small_cnn", (8, 8, 1), 10, conv_filters=(16, 32))
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=64, epochs=10, verbose=0)
    return model


def test_transfer_from_other_model_lowers_accuracy_less_than_white_box():
    target = undefended_digits_model()
    x, y = _data(64)
    transfer = TransferAttack(_source_model(), APGD(0.2, steps=20, seed=0))
    x_adv = transfer(target, x, y)
    _assert_in_threat_model(x_adv, x, 0.2)
    transfer_accuracy = accuracy(target, x_adv, y)
    white_box = accuracy(target, APGD(0.2, steps=20, seed=0)(target, x, y), y)
    assert transfer_accuracy < accuracy(target, x, y) - 0.2
    assert transfer_accuracy >= white_box
    assert transfer.config()["base_attack"]["name"] == "apgd-ce"


@pytest.mark.parametrize("method", ["fgsm", "pgd", "bim", "mim"])
def test_cleverhans_gradient_methods_with_true_labels(method):
    model = undefended_digits_model()
    x, y = _data(64)
    attack = CleverHansAttack(method, EPS, step_size=0.05, steps=10, seed=0)
    x_adv = attack(model, x, y)
    _assert_in_threat_model(x_adv, x, EPS)
    assert accuracy(model, x_adv, y) < (0.2 if method == "fgsm" else 0.1)
    # The global seed is set at every call, so a call repeats itself.
    np.testing.assert_array_equal(attack(model, x, y), x_adv)


def test_cleverhans_cw_l2_agrees_with_ours():
    model = undefended_digits_model()
    x, y = _data(3)
    settings = dict(steps=40, binary_search_steps=2, initial_const=1.0)
    theirs = CleverHansAttack("cw_l2", 3.0, step_size=0.1, norm="l2", **settings)
    ours = CarliniWagnerL2(3.0, lr=0.1, **settings)
    x_theirs = theirs(model, x, y)
    x_ours = ours(model, x, y)
    assert accuracy(model, x_theirs, y) == accuracy(model, x_ours, y) == 0.0
    ratio = np.asarray(theirs.last_norms) / np.asarray(ours.last_norms)
    assert np.all((ratio > 0.5) & (ratio < 2.0))
