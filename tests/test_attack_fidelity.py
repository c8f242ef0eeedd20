"""Attacks do what their config says (issue 12): restarts really run, the
HE-adaptive objectives differ from CE-PGD, Temperature-PGD's 1/T acts on the
cosines, Square follows AutoAttack's port, APGD halves its step and restarts
from the best point at AutoAttack's checkpoints."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import accuracy, digits_arrays, undefended_digits_model

from he_keras.attacks import (
    CWLinf,
    HEAdaptivePGD,
    PGDRestarts,
    ProjectedGradientAttack,
    TemperaturePGD,
)
from he_keras.attacks.adaptive import HE_OBJECTIVES, boundary_margin
from he_keras.models.heads import find_head

EPS = 0.1
STEP = 0.025


def _data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    _, _, x, y = digits_arrays()
    return x[:n], y[:n]


def _worst_of(model, x, y, candidates) -> np.ndarray:
    """Per-example worst case (largest margin, earliest on ties) by hand."""
    best = np.asarray(x)
    margin = boundary_margin(model, tf.constant(x), tf.constant(y)).numpy()
    for candidate in candidates:
        new = boundary_margin(model, tf.constant(candidate), tf.constant(y)).numpy()
        better = new > margin
        best = np.where(better[:, None, None, None], candidate, best)
        margin = np.where(better, new, margin)
    return best


@pytest.mark.parametrize(
    "make, objective, params",
    [
        (lambda k: PGDRestarts(EPS, STEP, 5, restarts=k, seed=5), "ce", None),
        (lambda k: CWLinf(EPS, STEP, 5, restarts=k, seed=5), "cw", {"kappa": float("inf")}),
    ],
    ids=["pgd_restarts", "cw_linf"],
)
def test_restarts_run_k_random_starts_and_keep_the_worst_case(make, objective, params):
    model = undefended_digits_model()
    x, y = _data()
    attack = make(3)
    x_adv = np.asarray(attack(model, x, y))
    # The same member attack (same seed) called three times: three starts.
    single = ProjectedGradientAttack(
        EPS, STEP, 5, objective=objective, objective_params=params, keep_best=True, seed=5
    )
    runs = [np.asarray(single(model, x, y)) for _ in range(3)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not np.array_equal(runs[a], runs[b])
    np.testing.assert_array_equal(x_adv, _worst_of(model, x, y, runs))
    # The later restarts changed the result for some examples.
    assert not np.array_equal(x_adv, _worst_of(model, x, y, runs[:1]))
    assert attack.last_runs == 3 and attack.config()["restarts"] == 3


def test_more_restarts_can_only_lower_accuracy():
    model = undefended_digits_model()
    x, y = _data()
    accuracies = [
        accuracy(model, PGDRestarts(EPS, STEP, 5, restarts=k, seed=0)(model, x, y), y)
        for k in (1, 2, 4)
    ]
    assert accuracies == sorted(accuracies, reverse=True)
    assert accuracies[-1] < accuracies[0]


@pytest.mark.parametrize("objective", HE_OBJECTIVES)
def test_each_he_adaptive_objective_takes_another_path_than_ce_pgd(objective):
    model = undefended_digits_model("he", epochs=8)
    x, y = _data()
    ce = np.asarray(PGDRestarts(EPS, STEP, 10, restarts=1, seed=0)(model, x, y))
    attack = HEAdaptivePGD(EPS, STEP, 10, objectives=(objective,), seed=0)
    x_adv = np.asarray(attack(model, x, y))
    differs = np.abs(x_adv - ce).reshape(len(x), -1).max(axis=1) > 1e-6
    assert differs.mean() > 0.5, objective
    config = attack.config()
    assert config["objectives_run"] == [objective]
    assert config["last_model"] == {"head": "he", "s": 15.0}


def _rescaled_copy(model: keras.Model, s: float) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    find_head(copy).scale.assign(s)
    return copy


def test_temperature_pgd_acts_on_the_cosines_whatever_the_scale():
    model = undefended_digits_model("he", epochs=8)
    x, y = _data()
    outputs, configs = [], []
    for s in (15.0, 30.0):
        rescaled = _rescaled_copy(model, s)
        attack = TemperaturePGD(EPS, STEP, 10, temperatures=(0.02, 1.0), seed=0)
        outputs.append(np.asarray(attack(rescaled, x, y)))
        configs.append(attack.config())
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)
    assert configs[0]["inverse_temperatures"] == [50.0, 1.0]
    assert configs[0]["last_model"] == {"head": "he", "s": 15.0}
    assert configs[1]["inverse_temperatures_on_logits"] == pytest.approx([50 / 30, 1 / 30])


def test_temperature_pgd_divides_the_logits_of_a_linear_head():
    model = undefended_digits_model()
    x, y = _data()
    attack = TemperaturePGD(EPS, STEP, 5, temperatures=(0.5,), seed=0)
    reference = PGDRestarts(
        EPS, STEP, 5, restarts=1, objective="temperature_ce",
        objective_params={"temperature": 0.5}, seed=0,
    )
    np.testing.assert_array_equal(attack(model, x, y), reference(model, x, y))
    assert attack.config()["last_model"] == {"head": "linear", "s": None}
