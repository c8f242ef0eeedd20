"""Tests of the white-box evaluation attacks (APGD, FAB-T, DeepFool, CW,
adaptive PGD, feature attack) on the undefended digits CNN."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import accuracy, digits_arrays, fooled_within_round_off, undefended_digits_model
from scipy.optimize import linprog

from he_keras.attacks import (
    APGD,
    NES,
    ZOO,
    APGDTargeted,
    Attack,
    CarliniWagnerL2,
    CleverHansAttack,
    CWLinf,
    DeepFool,
    FABTargeted,
    FeatureAttack,
    HEAdaptivePGD,
    PGDRestarts,
    ProjectedGradientAttack,
    RayS,
    Square,
    TemperaturePGD,
    TransferAttack,
)
from he_keras.attacks.fab import linf_hyperplane_projection
from he_keras.attacks.feature import penultimate_model

EPS = 0.3
N = 64


def _data(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    _, _, x, y = digits_arrays()
    return x[:n], y[:n]


def _assert_in_threat_model(x_adv, x, eps: float, norm: str = "linf") -> None:
    x_adv = np.asarray(x_adv)
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps + 1e-5


class Scaled:
    """A model with its logits multiplied by a variable factor."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.factor = tf.Variable(1.0)

    def __call__(self, x, training: bool = False):
        return self.model(x, training=training) * self.factor


WHITE_BOX = {
    "apgd_ce": lambda: APGD(EPS, steps=25, seed=0),
    "apgd_dlr": lambda: APGD(EPS, loss="dlr", steps=25, seed=0),
    "apgd_t": lambda: APGDTargeted(EPS, steps=25, n_target_classes=3, seed=0),
    "fab_t": lambda: FABTargeted(EPS, steps=25, n_target_classes=3, seed=0),
    "deepfool": lambda: DeepFool(EPS, max_iter=50),
    "cw_linf": lambda: CWLinf(EPS, step_size=0.05, steps=20, seed=0),
    "pgd_restarts": lambda: PGDRestarts(EPS, step_size=0.05, steps=10, restarts=2, seed=0),
    "temperature_pgd": lambda: TemperaturePGD(EPS, step_size=0.05, steps=10, seed=0),
    "he_adaptive_pgd": lambda: HEAdaptivePGD(EPS, step_size=0.05, steps=10, seed=0),
    "feature": lambda: FeatureAttack(EPS, step_size=0.05, steps=15, n_targets=4, seed=0),
}


@pytest.mark.parametrize("name", sorted(WHITE_BOX))
def test_white_box_attack_breaks_undefended_model(name):
    model = undefended_digits_model()
    x, y = _data()
    attack = WHITE_BOX[name]()
    x_adv = attack(model, x, y)
    _assert_in_threat_model(x_adv, x, EPS)
    assert accuracy(model, x_adv, y) < 0.1
    traces = attack.trace_count
    attack(model, x, y)
    assert attack.trace_count == traces >= 1


def test_he_adaptive_pgd_breaks_he_model_with_each_objective():
    model = undefended_digits_model("he", epochs=8)
    x, y = _data()
    for objective in ("raw_ce", "dlr", "cw"):
        attack = HEAdaptivePGD(EPS, 0.05, 10, objectives=(objective,), seed=0)
        x_adv = attack(model, x, y)
        _assert_in_threat_model(x_adv, x, EPS)
        assert accuracy(model, x_adv, y) < 0.1, objective
        assert attack.trace_count == 1


def test_he_adaptive_pgd_degrades_to_ce_without_he_head():
    attack = HEAdaptivePGD(EPS, 0.05, 10, objectives=("raw_ce",), seed=0)
    model = undefended_digits_model()
    x, y = _data()
    assert accuracy(model, attack(model, x, y), y) < 0.1
    # Only the CE member ran: without an HE head raw CE is CE-PGD itself.
    assert attack.trace_count == 1
    assert attack.config()["objectives_run"] == ["ce"]


def test_cw_l2_breaks_undefended_model_in_l2():
    model = undefended_digits_model()
    x, y = _data(32)
    attack = CarliniWagnerL2(
        2.0, steps=40, binary_search_steps=3, lr=0.05, initial_const=0.1
    )
    x_adv = attack(model, x, y)
    _assert_in_threat_model(x_adv, x, 2.0, "l2")
    assert accuracy(model, x_adv, y) < 0.1
    assert np.all(np.isfinite(attack.last_norms))
    # Deterministic, and compiled once.
    np.testing.assert_array_equal(attack(model, x, y), x_adv)
    assert attack.trace_count == 1


def test_apgd_is_not_weaker_than_pgd20():
    model = undefended_digits_model()
    x, y = _data(128)
    pgd = ProjectedGradientAttack(0.1, 0.01, 20, keep_best=True, seed=0)
    pgd_accuracy = accuracy(model, pgd(model, x, y), y)
    apgd_t = APGDTargeted(0.1, steps=50, n_target_classes=3, seed=0)
    for attack in (APGD(0.1, steps=50, seed=0), apgd_t):
        assert accuracy(model, attack(model, x, y), y) <= pgd_accuracy, attack.name


def test_dlr_is_scale_invariant_while_ce_is_not():
    model = undefended_digits_model()
    x, y = _data(128)
    scaled = Scaled(model)
    dlr = APGD(0.1, loss="dlr", steps=30, seed=0)
    ce = APGD(0.1, steps=30, seed=0)

    def run(attack, factor):
        scaled.factor.assign(factor)
        attack.rng.reset_from_seed(0)
        x_adv = attack(scaled, x, y)
        return float(np.mean(np.argmax(scaled(x_adv), 1) == y))

    dlr_accuracy, ce_accuracy = run(dlr, 1.0), run(ce, 1.0)
    # Scaled up, the float32 softmax saturates and CE gradients vanish;
    # scaled down, CE spreads its gradient over all classes. DLR is unmoved.
    # Powers of two: the scaled logits are exact, so DLR's path is the same.
    for factor in (2.0**10, 2.0**-10):
        assert run(dlr, factor) == pytest.approx(dlr_accuracy, abs=0.02)
        assert run(ce, factor) > ce_accuracy + 0.1
    assert dlr.trace_count == ce.trace_count == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeepFool(0.1, norm="linf", max_iter=50),
        lambda: DeepFool(1.0, norm="l2", max_iter=50),
        lambda: FABTargeted(0.1, steps=30, n_target_classes=3),
        lambda: CarliniWagnerL2(0.1, steps=40, binary_search_steps=3, lr=0.05, norm="linf"),
    ],
    ids=["deepfool_linf", "deepfool_l2", "fab_t", "cw_l2_linf"],
)
def test_minimal_norm_attacks_report_consistent_norms(make):
    model = undefended_digits_model()
    x, y = _data()
    attack = make()
    x_adv = np.asarray(attack(model, x, y))
    norms = np.asarray(attack.last_norms)
    _assert_in_threat_model(x_adv, x, attack.eps, attack.config()["norm"])
    clean_correct = np.argmax(model.predict(x, verbose=0), 1) == y
    fooled = fooled_within_round_off(model, x_adv, y)
    assert norms.shape == (len(x),)
    assert np.all(norms[clean_correct] > 0.0)
    # Within eps the found point is returned unchanged, so it is adversarial.
    assert np.all(fooled[norms <= attack.eps])
    assert 0.0 < np.mean(norms <= attack.eps) < 1.0


def test_linf_hyperplane_projection_matches_linear_program():
    rng = np.random.default_rng(0)
    n, d = 12, 7
    p = rng.uniform(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(n, d)).astype(np.float32)
    b = rng.normal(scale=0.7, size=n).astype(np.float32)
    delta = linf_hyperplane_projection(tf.constant(p), tf.constant(w), tf.constant(b))
    delta = delta.numpy()
    feasible = 0
    for i in range(n):
        # Variables (d_1..d_d, t): minimize t, |d_j| <= t, w.(p + d) = b, p + d in box.
        bound = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
        result = linprog(
            np.r_[np.zeros(d), 1.0],
            A_ub=bound,
            b_ub=np.zeros(2 * d),
            A_eq=np.r_[w[i], 0.0][None],
            b_eq=[b[i] - w[i] @ p[i]],
            bounds=[(-p[i, j], 1 - p[i, j]) for j in range(d)] + [(0, None)],
        )
        point = p[i] + delta[i]
        assert point.min() >= -1e-6 and point.max() <= 1 + 1e-6
        if result.status == 0:
            feasible += 1
            assert np.abs(delta[i]).max() == pytest.approx(result.fun, abs=1e-4)
            assert w[i] @ point == pytest.approx(b[i], abs=1e-4)
        else:
            # No point of the box on the plane: every coordinate at its face.
            assert np.all(np.isclose(point, 0.0) | np.isclose(point, 1.0))
    assert feasible >= n // 2


SEEDED = {
    "apgd": lambda seed: APGD(0.1, steps=10, seed=seed),
    "square": lambda seed: Square(0.1, n_queries=30, seed=seed),
    # An eps that leaves points unbroken after the first run, so the random
    # restart runs (at 0.1 FAB-T may break every point first, and then the
    # output cannot depend on the seed).
    "fab_restarts": lambda seed: FABTargeted(
        0.02, steps=5, n_target_classes=1, restarts=2, seed=seed
    ),
    "nes": lambda seed: NES(0.1, 0.01, steps=3, samples=8, seed=seed),
    "zoo": lambda seed: ZOO(0.1, steps=3, coords_per_step=8, seed=seed),
    "pgd_restarts": lambda seed: PGDRestarts(0.1, 0.02, 5, restarts=2, seed=seed),
    "feature": lambda seed: FeatureAttack(0.1, 0.02, steps=5, n_targets=2, seed=seed),
}


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_seeded_attacks_are_reproducible_and_compiled_once(name):
    model = undefended_digits_model()
    x, y = _data(32)
    attack = SEEDED[name](1)
    first = np.asarray(attack(model, x, y))
    traces = getattr(attack, "trace_count", None)
    second = np.asarray(attack(model, x, y))
    np.testing.assert_array_equal(np.asarray(SEEDED[name](1)(model, x, y)), first)
    if name == "fab_restarts":
        assert np.mean(np.asarray(attack.last_norms) > attack.eps) > 0.5
    # The random stream goes on between calls, without retracing.
    assert not np.array_equal(first, second)
    assert getattr(attack, "trace_count", None) == traces


# Every attack with a compiled loop, at a small budget.
COMPILED = {
    "pgd": lambda: ProjectedGradientAttack(EPS, 0.05, 3, seed=0),
    "apgd": lambda: APGD(EPS, steps=5, seed=0),
    "apgd_t": lambda: APGDTargeted(EPS, steps=5, n_target_classes=2, seed=0),
    "fab_t": lambda: FABTargeted(0.02, steps=3, n_target_classes=1, restarts=2, seed=0),
    "square": lambda: Square(0.05, n_queries=10, seed=0),
    "cw_l2": lambda: CarliniWagnerL2(1.0, steps=3, binary_search_steps=1),
    "deepfool": lambda: DeepFool(EPS, max_iter=3),
    "rays": lambda: RayS(0.05, query_limit=20, seed=0),
    "nes": lambda: NES(0.05, 0.01, steps=2, samples=4, seed=0),
    "zoo": lambda: ZOO(0.05, steps=2, coords_per_step=4, seed=0),
}


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_a_compiled_attack_traces_once_whatever_the_number_of_points(name):
    # A chain hands each attack the points its earlier attacks left robust:
    # a different number each call, one trace for them all.
    model = undefended_digits_model()
    x, y = _data(16)
    attack = COMPILED[name]()
    attack(model, x[:7], y[:7])
    traces = attack.trace_count
    for n in (3, 16, 5, 1):
        assert np.asarray(attack(model, x[:n], y[:n])).shape == x[:n].shape
    assert traces >= 1 and attack.trace_count == traces, (traces, attack.trace_count)

def _all_attacks() -> list:
    return [make() for make in WHITE_BOX.values()] + [
        CarliniWagnerL2(1.0),
        Square(0.1),
        NES(0.1, 0.01),
        ZOO(0.1),
        RayS(0.1),
        TransferAttack(undefended_digits_model(), APGD(0.1, seed=3)),
        CleverHansAttack("spsa", 0.1),
        CleverHansAttack("cw_l2", 1.0, norm="l2"),
    ]


def test_config_is_json_ready_and_named():
    names = set()
    for attack in _all_attacks():
        assert isinstance(attack, Attack)
        config = attack.config()
        json.dumps(config, allow_nan=False)
        assert config["name"] == attack.name
        names.add(attack.name)
    assert len(names) == len(_all_attacks())


@pytest.mark.parametrize(
    "make, bad",
    [
        (lambda: APGD(0.1, loss="kl"), "loss"),
        (lambda: APGD(0.1, rho=1.5), "rho"),
        (lambda: APGD(0.1, restarts=0), "restarts"),
        (lambda: APGD(1.5), "eps"),
        (lambda: APGDTargeted(0.1, n_target_classes=0), "n_target_classes"),
        (lambda: Square(0.1, p_init=0.0), "p_init"),
        (lambda: Square(0.1, n_queries=2.5), "n_queries"),
        (lambda: FABTargeted(0.1, eta=0.5), "eta"),
        (lambda: FABTargeted(0.1, alpha_max=1.0), "alpha_max"),
        (lambda: DeepFool(0.1, norm="l1"), "norm"),
        (lambda: DeepFool(0.1, overshoot=-0.1), "overshoot"),
        (lambda: CarliniWagnerL2(1.0, binary_search_steps=0), "binary_search_steps"),
        (lambda: CarliniWagnerL2(1.0, lr=0.0), "lr"),
        (lambda: CWLinf(0.1, 0.01, 10, kappa=-1.0), "kappa"),
        (lambda: PGDRestarts(0.1, 0.0, 10), "step_size"),
        (lambda: TemperaturePGD(0.1, 0.01, 10, temperatures=(1.0, 0.0)), "temperatures"),
        (lambda: HEAdaptivePGD(0.1, 0.01, 10, objectives=("xent",)), "objectives"),
        (lambda: FeatureAttack(0.1, 0.01, n_targets=0), "n_targets"),
        (lambda: NES(0.1, 0.01, samples=7), "samples"),
        (lambda: NES(0.1, 0.01, sigma=0.0), "sigma"),
        (lambda: ZOO(0.1, h=0.0), "h"),
        (lambda: ZOO(0.1, coords_per_step=0), "coords_per_step"),
        (lambda: RayS(0.1, query_limit=0), "query_limit"),
        (lambda: TransferAttack(None, "apgd"), "base_attack"),
        (lambda: CleverHansAttack("deepfool", 0.1), "method"),
        (lambda: CleverHansAttack("pgd", 0.1), "step_size"),
        (lambda: CleverHansAttack("spsa", 0.1, norm="l2"), "norm"),
    ],
)
def test_invalid_arguments_raise_naming_the_value(make, bad):
    with pytest.raises(ValueError, match=f"`{bad}`"):
        make()


def test_targeted_attacks_check_the_number_of_classes():
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    x, y = _data(4)
    y = y % 3
    with pytest.raises(ValueError, match="at least 4 classes"):
        APGDTargeted(0.1, n_target_classes=2)(model, x, y)
    with pytest.raises(ValueError, match="at least 10 classes"):
        FABTargeted(0.1, n_target_classes=9)(model, x, y)
    with pytest.raises(ValueError, match="3 classes"):
        APGD(0.1, loss="dlr")(keras.Sequential([model, keras.layers.Dense(2)]), x, y)


def test_feature_attack_reads_penultimate_features_and_target_pool():
    model = undefended_digits_model()
    features = penultimate_model(model)
    assert features.output.shape[-1] == model.layers[-1].input.shape[-1]
    x, y = _data(32)
    pool = digits_arrays()[0][:200], digits_arrays()[1][:200]
    attack = FeatureAttack(EPS, 0.05, steps=15, n_targets=3, target_pool=pool, seed=0)
    x_adv = attack(model, x, y)
    _assert_in_threat_model(x_adv, x, EPS)
    assert accuracy(model, x_adv, y) < 0.1
    assert attack.config()["target_pool"] == 200
