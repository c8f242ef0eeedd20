"""The suite on the undefended digits CNN and on gradient-masked twins of it."""

import json

import keras
import pytest
import tensorflow as tf

from helpers import digits_arrays, undefended_digits_model
from he_keras.attacks.apgd import APGDTargeted
from he_keras.attacks.core import ProjectedGradientAttack
from he_keras.attacks.square import Square
from he_keras.evaluation import SuiteAttack, evaluate
from he_keras.evaluation.presets import quick_attacks

EPS = 0.3


def test_quick_preset_white_box_attacks_break_the_undefended_model():
    _, _, x, y = digits_arrays()
    report = evaluate(undefended_digits_model(), x[:96], y[:96], 10, suite="quick", eps=EPS, seed=0)
    assert report["clean_accuracy"] > 0.9
    names = [a["name"] for a in report["attacks"]]
    assert names == ["FGSM", "PGD-20", "CW-Linf", "HE-adaptive", "Temperature-PGD"]
    for attack in report["attacks"]:
        assert attack["kind"] == "white-box"
        assert attack["accuracy"] < 0.10, attack
        assert attack["n_outside_ball"] == 0 and attack["n_nonfinite"] == 0
    assert report["robust_accuracy"] <= min(a["accuracy"] for a in report["attacks"])
    # No false alarm on an honest, undefended model.
    assert not [c["name"] for c in report["checks"] if c["flagged"]]


def strip_timings(obj):
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


def small_suite(seed, eps=EPS, pgd_steps=20):
    fgsm, pgd = quick_attacks(eps, "linf", seed)[:2]
    if pgd_steps != 20:
        weak = ProjectedGradientAttack(eps, eps / 10, pgd_steps, keep_best=True, seed=seed)
        pgd = SuiteAttack(f"PGD-{pgd_steps}", weak, {"steps": pgd_steps, "seed": seed})
    return [fgsm, pgd,
            SuiteAttack("APGD-T", APGDTargeted(eps, steps=10, n_target_classes=3, seed=seed + 10),
                        {"steps": 10}, standalone=False),
            SuiteAttack("Square", Square(eps, n_queries=300, seed=seed + 11), {"n_queries": 300},
                        kind="black-box", standalone=False)]


def test_same_seed_gives_the_same_report():
    _, _, x, y = digits_arrays()
    model = undefended_digits_model()
    # At eps 0.1 a 2-step PGD leaves points for APGD-T and Square (random) to work on.
    runs = [
        json.dumps(strip_timings(evaluate(
            model, x[:64], y[:64], 10, attacks=small_suite(7, 0.1, pgd_steps=2), eps=0.1, seed=7
        )), sort_keys=True)
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    report = json.loads(runs[0])
    assert report["settings"]["seed"] == 7
    assert [a["n_attacked"] > 0 for a in report["attacks"]] == [True] * 4


class Scaled(keras.Model):
    """Logits times 1e4: the float32 softmax saturates, CE gradients vanish."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def call(self, x, training=False):
        return self.inner(x, training=training) * 1e4


class Quantized(keras.Model):
    """Inputs floored to multiples of 1/16: exact on digits, zero gradients."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def call(self, x, training=False):
        return self.inner(x - tf.math.floormod(x, 1 / 16), training=training)


@pytest.fixture(scope="module")
def unmasked_report():
    _, _, x, y = digits_arrays()
    return evaluate(undefended_digits_model(), x[:64], y[:64], 10, attacks=small_suite(0), eps=EPS, seed=0)


@pytest.mark.parametrize("twin,flags", [
    (Scaled, {"zero_gradients", "accuracy_vs_eps"}),
    (Quantized, {"zero_gradients", "black_box_beats_white_box", "accuracy_vs_eps"}),
])
def test_gradient_masked_twin_is_flagged_and_not_overestimated(twin, flags, unmasked_report):
    _, _, x, y = digits_arrays()
    masked = twin(undefended_digits_model())
    report = evaluate(masked, x[:64], y[:64], 10, suite="standard", attacks=small_suite(0), eps=EPS, seed=0)
    assert report["clean_accuracy"] == unmasked_report["clean_accuracy"]
    flagged = {c["name"] for c in report["checks"] if c["flagged"]}
    assert flags <= flagged, report["checks"]
    pgd = {a["name"]: a for a in report["attacks"]}["PGD-20"]
    # CE-PGD alone is fooled by the masking ...
    assert pgd["accuracy"] > 0.8
    # ... the ensemble (DLR / Square) is not.
    assert report["robust_accuracy"] <= unmasked_report["robust_accuracy"] + 0.05
    zero = next(c for c in report["checks"] if c["name"] == "zero_gradients")["evidence"]
    if twin is Quantized:  # zero by construction: a step function of the input
        assert zero["zero_ce"] == zero["n"]
    else:  # softmax underflow: exact zeros, except where a top-2 gap is tiny
        assert zero["zero_ce"] >= 0.9 * zero["n"]
    assert (zero["zero_dlr"] == zero["n"]) == (twin is Quantized)
