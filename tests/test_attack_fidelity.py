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
    APGD,
    CWLinf,
    HEAdaptivePGD,
    PGDRestarts,
    ProjectedGradientAttack,
    Square,
    TemperaturePGD,
)
from he_keras.attacks.adaptive import boundary_margin
from he_keras.attacks.he_adaptive import HE_OBJECTIVES
from he_keras.attacks.apgd import checkpoint_schedule
from he_keras.attacks.square import window_sides
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
    # Restarts stop once every example is misclassified.
    attack = PGDRestarts(0.3, 0.05, 10, restarts=3, seed=0)
    assert accuracy(model, attack(model, x, y), y) == 0.0 and attack.last_runs == 1


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


def _p_j_checkpoints(steps: int) -> list[int]:
    """The paper's checkpoints w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return [int(np.ceil(pj * steps - 1e-9)) for pj in p[1:]]


def test_apgd_checkpoints_follow_autoattack():
    assert checkpoint_schedule(100) == _p_j_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # AutoAttack's code truncates 0.22 N, 0.03 N and 0.06 N (N = 25: 5, 1, 1).
    assert checkpoint_schedule(25) == [5, 9, 12, 14] + list(range(15, 26))


class _Wave:
    """Two-class toy model on one pixel u: logits (cos(W u) + 2, 0).

    Class 0 always wins, so APGD runs all its steps; the CE loss
    softplus(-cos(W u) - 2) has several local maxima in the eps-ball.
    """

    W = 25.0

    def __call__(self, x, training=False):
        u = x[:, 0]
        return tf.stack([tf.cos(self.W * u) + 2.0, tf.zeros_like(u)], axis=-1)

    @classmethod
    def loss_and_grad(cls, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = np.cos(cls.W * u) + 2.0
        sig = 1.0 / (1.0 + np.exp(v))
        return np.log1p(np.exp(-v)), sig * cls.W * np.sin(cls.W * u)


def _reference_apgd(x, u0, eps, steps, rho=0.75, factor=2.0, restart=True):
    """Linf APGD of Croce & Hein (2020) on `_Wave`, in float64 numpy.

    `factor` divides the step at a checkpoint and `restart` moves the
    iterate to the best point there (2 and True in APGD).
    """

    def project(v):
        return np.clip(np.clip(v, x - eps, x + eps), 0.0, 1.0)

    checks = _p_j_checkpoints(steps)
    u = prev = u0
    loss, grad = _Wave.loss_and_grad(u)
    u_best, g_best, l_best = u, grad, loss
    step = np.full_like(x, 2 * eps)
    l_prev, increases = loss, np.zeros_like(x)
    reduced_last, l_best_last, last_check = np.ones_like(x, bool), l_best, 0
    for i in range(steps):
        a = 1.0 if i == 0 else 0.75
        z = project(u + step * np.sign(grad))
        prev, u = u, project(u + a * (z - u) + (1 - a) * (u - prev))
        loss, grad = _Wave.loss_and_grad(u)
        increases += loss > l_prev
        l_prev = loss
        better = loss > l_best
        u_best, g_best, l_best = (np.where(better, n, o) for n, o in
                                  ((u, u_best), (grad, g_best), (loss, l_best)))
        if i + 1 in checks:
            k, last_check = i + 1 - last_check, i + 1
            halve = (increases <= rho * k) | (~reduced_last & (l_best_last >= l_best))
            step = np.where(halve, step / factor, step)
            if restart:
                u, grad = np.where(halve, u_best, u), np.where(halve, g_best, grad)
            reduced_last, l_best_last, increases = halve, l_best, np.zeros_like(x)
    return u_best


@pytest.mark.parametrize("rho", [0.75, 0.5])
def test_apgd_halves_its_step_and_restarts_from_the_best_point(rho):
    x = np.linspace(0.05, 0.95, 24)
    eps = 0.3
    attack = APGD(eps, steps=100, rho=rho, seed=0)
    out = np.asarray(attack(_Wave(), x[:, None].astype(np.float32), np.zeros(24, np.int32)))[:, 0]
    # The start is x + eps or x - eps (t / ||t||_inf = +-1 in one dimension).
    def distance_to_reference(**variant):
        ends = [
            _reference_apgd(x, np.clip(x + sign * eps, 0, 1), eps, 100, rho, **variant)
            for sign in (1, -1)
        ]
        return np.minimum(np.abs(out - ends[0]), np.abs(out - ends[1]))

    np.testing.assert_array_less(distance_to_reference(), 1e-5)
    # The comparison has teeth: a step that never halves, or no restart
    # from the best point, ends elsewhere for many of the 24 pixels.
    assert np.mean(distance_to_reference(factor=1.0) > 1e-4) > 0.25
    assert np.mean(distance_to_reference(restart=False) > 1e-4) > 0.25


def _proposal_windows(attack, x, i, draws, x_best=None):
    """Per draw: the (batch, h, w, c) change of a proposal from `x_best` (x)."""
    x_best = tf.constant(x if x_best is None else x_best)
    changes = []
    for _ in range(draws):
        candidate = attack._propose(tf.constant(x), x_best, tf.constant(i))
        changes.append(np.asarray(candidate) - x)
    return changes


def test_square_shares_one_window_per_iteration_as_autoattack():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, size=(6, 8, 8, 3)).astype(np.float32)
    attack = Square(0.1, seed=0)
    assert window_sides(0.8, 8, 8) == [7, 5, 4, 3, 2, 1, 1, 1, 1, 1]
    corners = set()
    # Iteration 10 still uses p_init, 11 the first halving, 51 the second, ...
    for i, side in ((0, 7), (10, 7), (11, 5), (50, 5), (51, 4), (600, 2), (1001, 1)):
        for change in _proposal_windows(attack, x, i, 40 if side == 2 else 3):
            # One window and one sign per channel for the whole batch.
            pattern = np.round(change / 0.1)
            np.testing.assert_array_equal(pattern, np.broadcast_to(pattern[:1], pattern.shape))
            rows = np.flatnonzero(np.abs(change[0]).max(axis=(1, 2)) > 0)
            cols = np.flatnonzero(np.abs(change[0]).max(axis=(0, 2)) > 0)
            assert len(rows) == len(cols) == side, i
            assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
            np.testing.assert_allclose(np.abs(change[0][rows][:, cols]), 0.1, atol=1e-6)
            if side == 2:
                corners.add((rows[0], cols[0]))
    # The corner is floor(U * (8 - side)): 0..5 for side 2, never 6.
    assert {r for r, _ in corners} == set(range(6)) == {c for _, c in corners}
    # From the corner x - eps, a window moves by 2 eps where its sign is +.
    changes = np.stack(_proposal_windows(attack, x, 0, 10, x_best=x - 0.1))
    assert set(np.unique(np.round(changes / 0.1)).tolist()) == {-1.0, 1.0}


def test_square_accepts_only_margin_decreases_and_stays_in_the_ball():
    model = undefended_digits_model()
    x, y = _data(32)
    attack = Square(0.1, n_queries=50, seed=0)
    x_adv = np.asarray(attack(model, x, y))
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and 0.0 <= x_adv.min() <= x_adv.max() <= 1.0
    # Never worse than the stripes it started from: the stripes of the same
    # seed, redrawn, have a margin at least as large.
    stripes = tf.random.Generator.from_seed(0).uniform([32, 1, 8, 1]) - 0.5
    start = np.clip(x + 0.1 * np.sign(stripes.numpy()), 0.0, 1.0)
    start_margin = boundary_margin(model, tf.constant(start), tf.constant(y)).numpy()
    final_margin = boundary_margin(model, tf.constant(x_adv), tf.constant(y)).numpy()
    # Square judged its margins on shrinking subsets (other kernels): 1e-4 of
    # slack for logits of order 10.
    assert np.all(final_margin >= start_margin - 1e-4)
    assert np.mean(final_margin > start_margin + 1e-3) > 0.5


def test_temperature_pgd_follows_a_scale_change_without_retracing():
    # HE-LIS / HE-CMP change s between epochs: one attack object must read the
    # new s at every call, from the same traced loop.
    model = _rescaled_copy(undefended_digits_model("he", epochs=8), 15.0)
    x, y = _data(32)
    attack = TemperaturePGD(EPS, STEP, 5, temperatures=(0.1,), seed=0)
    first = np.asarray(attack(model, x, y))
    traces = attack.trace_count
    # 60 = 4 x 15: a power-of-two ratio, so (60 c) / 60 == (15 c) / 15 exactly
    # and the comparison below rests on no round-off.
    find_head(model).scale.assign(60.0)
    attack(model, x, y)  # same object: its random starts have moved on
    assert attack.trace_count == traces
    # A fresh attack (same seed as the first call) at s = 60 repeats the
    # s = 15 result: the temperature acts on the cosines read at call time.
    fresh = np.asarray(TemperaturePGD(EPS, STEP, 5, temperatures=(0.1,), seed=0)(model, x, y))
    np.testing.assert_allclose(first, fresh, atol=1e-6)
    assert attack.config()["last_model"]["s"] == 60.0


def test_adaptive_attacks_refuse_a_zero_scale():
    model = _rescaled_copy(undefended_digits_model("he", epochs=8), 0.0)
    x, y = _data(8)
    for attack in (TemperaturePGD(EPS, STEP, 2, seed=0), HEAdaptivePGD(EPS, STEP, 2, seed=0)):
        with pytest.raises(ValueError, match="`s` must be > 0"):
            attack(model, x, y)


def test_square_window_fits_a_non_square_image():
    sides = window_sides(0.8, 4, 32)
    assert max(sides) <= 4 and sides[-1] >= 1
    assert window_sides(0.8, 32, 32)[0] == round((0.8 * 32 * 32) ** 0.5)
