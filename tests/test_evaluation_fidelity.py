"""The evaluation suite does exactly what it reports (issue 12 items 5-8, 13, 15;
issue 13 item 6): attack configs, curves compiled once, checks that can fire
and say "not run" when they did not, AutoAttack on both outputs of an HE head,
and an ensemble that keeps every re-checked point inside the box."""

import importlib.util
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager.polymorphic_function import polymorphic_function

from helpers import digits_arrays, undefended_digits_model
from he_keras.attacks import Attack
from he_keras.attacks.core import ProjectedGradientAttack, fgsm
from he_keras.defaults import pgd_step_size
from he_keras.evaluation import AttackResult, SuiteAttack, checks, evaluate, presets, run_ensemble, suite
from he_keras.evaluation import points as points_lib
from he_keras.evaluation import report as report_lib
from he_keras.evaluation.ensemble import threat_model_projection
from he_keras.evaluation.raw_output import (
    FeatureNormalizedModel,
    OnFeatureNormalized,
    OnRawOutput,
    RawOutputModel,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = 0.3


def eval_points(n=64):
    _, _, x, y = digits_arrays()
    return x[:n], y[:n]


# Issue 13 item 6: ProjectedGradientAttack implements Attack; the suite uses config().


def test_pgd_and_fgsm_implement_attack_and_the_suite_reports_their_config():
    pgd = ProjectedGradientAttack(0.3, 0.03, 20, keep_best=True, seed=5)
    assert isinstance(pgd, Attack)
    config = pgd.config()
    assert config == {
        "name": "pgd", "eps": 0.3, "norm": "linf", "steps": 20, "step_size": 0.03,
        "random_start": "uniform", "objective": "ce", "objective_params": {}, "targeted": False,
        "keep_best": True, "training": False, "seed": 5,
    }
    assert fgsm(0.1).config()["name"] == "fgsm" and fgsm(0.1).config()["random_start"] == "zero"
    for spec in presets.quick_attacks(EPS, "linf", seed=3)[:2]:
        assert spec.config == spec.attack.config()
    fgsm_spec, pgd_spec = presets.quick_attacks(EPS, "linf", seed=3)[:2]
    assert (fgsm_spec.config["steps"], pgd_spec.config["steps"]) == (1, 20)
    assert pgd_spec.config["seed"] == 4 and pgd_spec.config["step_size"] == pytest.approx(pgd_step_size(EPS, 20))


def test_pgd_does_what_its_config_says():
    """Steps and eps of the config are what runs: 1 step of eps from a zero
    start moves every pixel by exactly eps (or to the box) along the sign."""
    x, y = eval_points(16)
    model = undefended_digits_model()
    attack = ProjectedGradientAttack(0.1, 0.1, 1, random_start="zero")
    delta = np.asarray(attack(model, x, y)) - x
    moved = np.abs(delta)[(x > 0.1) & (x < 0.9)]
    assert moved.size and np.allclose(moved[moved > 0], 0.1, atol=1e-6)
    longer = attack.with_budget(eps=0.05, step_size=0.01, steps=3)
    assert longer.config()["steps"] == 3 and longer.config()["eps"] == 0.05
    delta = np.asarray(longer(model, x, y)) - x
    assert np.abs(delta).max() == pytest.approx(0.03, abs=1e-6)


# Item 13: one trace per shape, no retracing warning.


@pytest.fixture
def created_pgds(monkeypatch):
    created = []
    init = ProjectedGradientAttack.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(ProjectedGradientAttack, "__init__", recording_init)
    return created


def test_pgd_traces_once_per_input_shape():
    x, y = eval_points(24)
    model = undefended_digits_model()

    def scaled_ce(labels, logits, scale):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits / scale)

    attack = ProjectedGradientAttack(0.1, 0.02, 2, objective=scaled_ce, keep_best=True, seed=0)
    scale = tf.constant(15.0)  # A scalar reference, as HE-adaptive passes the head's s.
    for n in (5, 7, 24):
        attack(model, x[:n], y[:n], scale)
    attack.with_budget(eps=0.2, step_size=0.05, steps=4)(model, x[:9], y[:9], scale)
    assert attack.trace_count == 1
    ce = ProjectedGradientAttack(0.1, 0.02, 2, keep_best=True, seed=0)
    for n in (3, 11, 24):
        ce(model, x[:n], y[:n])
    assert ce.trace_count == 1


@pytest.mark.parametrize("curve", ["accuracy_vs_steps", "accuracy_vs_eps"])
def test_a_curve_traces_its_pgd_once(curve, created_pgds):
    x, y = eval_points(70)  # 70 points in batches of 32: a ragged last batch.
    getattr(suite, curve)(undefended_digits_model(), x, y, 0.1, "linf", 0, 32)
    assert sum(a.trace_count for a in created_pgds) == 1, [a.trace_count for a in created_pgds]


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def tf_warnings(monkeypatch):
    """TF's warnings, with a fresh retracing detector (earlier tests may have
    used up its two warnings per function)."""
    monkeypatch.setattr(
        polymorphic_function, "_frequent_tracing_detector_manager",
        polymorphic_function._FrequentTracingDetectorManager(),
    )
    handler = Records()
    logger = tf.get_logger()
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.WARNING)
    yield handler.messages
    logger.setLevel(previous)
    logger.removeHandler(handler)


def test_quick_suite_with_curves_logs_no_retracing_warning(tf_warnings):
    x, y = eval_points(40)
    model = undefended_digits_model(head="he", epochs=5)  # HE-adaptive runs all its objectives.
    # Every quick attack (12 PGDs) and the steps curve, batches of 32 (ragged),
    # eps 0.1 so that points survive into every attack.
    evaluate(model, x, y, 10, suite="quick", eps=0.1, seed=0, batch_size=32)
    assert not [m for m in tf_warnings if "retracing" in m], tf_warnings


# Item 7: tri-state checks.


def load_app():
    spec = importlib.util.spec_from_file_location("evaluate_app", os.path.join(ROOT, "apps", "evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checks_that_did_not_run_say_not_run_in_json_markdown_and_app_output(tmp_path):
    x, y = eval_points(48)
    report = evaluate(undefended_digits_model(), x, y, 10, suite="quick", eps=EPS, seed=0,
                      attacks=presets.quick_attacks(EPS, "linf", 0)[:2])
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status["black_box_beats_white_box"] == "not run"
    assert status["accuracy_vs_eps"] == "not run"  # quick computes no eps curve
    assert status["single_step_beats_iterative"] == "passed"
    assert set(status.values()) <= {"passed", "flagged", "not run"}
    for check in report["checks"]:
        assert check["flagged"] == (check["status"] == "flagged")
    report_lib.write_report(report, str(tmp_path))
    md = (tmp_path / "report.md").read_text()
    assert "- not run `black_box_beats_white_box`: no black-box" in md
    assert "ok `black_box_beats_white_box`" not in md
    summary = load_app().summary_table(report)
    assert "check black_box_beats_white_box: not run" in summary
    assert "check single_step_beats_iterative: passed" in summary
    without = evaluate(undefended_digits_model(), x, y, 10, suite="standard", eps=EPS, seed=0,
                       attacks=presets.quick_attacks(EPS, "linf", 0)[:2], curves=False)
    status = {c["name"]: c for c in without["checks"]}
    for name in ("accuracy_vs_steps", "accuracy_vs_eps"):
        assert status[name]["status"] == "not run" and "curves=False" in str(status[name])
    assert without["curves"] == {}


def fake_result(name, kind, n_attacked, n_broken):
    return AttackResult(
        name=name, kind=kind, config={}, n_attacked=n_attacked, n_broken=n_broken, accuracy=None,
        cumulative_accuracy=0.0, chain=None, chain_accuracy=None, seconds=0.0, correct=None,
        survivors=np.zeros(n_attacked, bool), n_outside_ball=0, n_nonfinite=0, summary={},
    )


def test_black_box_check_is_not_run_without_a_black_box_attack_or_points_left():
    pgd = fake_result("PGD", "white-box", 100, 50)
    assert checks.black_box_check([pgd], 100).status == "not run"
    # Square ran, but on no point: it could not beat anything.
    idle = checks.black_box_check([pgd, fake_result("Square", "black-box", 0, 0)], 100)
    assert idle.status == "not run" and "no point left" in idle.message
    # A black-box attack before any white-box one is not compared either.
    first = checks.black_box_check([fake_result("Square", "black-box", 100, 3), pgd], 100)
    assert first.status == "not run"
    assert checks.black_box_check([pgd, fake_result("Square", "black-box", 40, 0)], 100).status == "passed"
    fired = checks.black_box_check([pgd, fake_result("Square", "black-box", 40, 1)], 100)
    assert fired.status == "flagged"  # 1 % > 0.2 pp
    assert checks.black_box_check([pgd, fake_result("Square", "black-box", 500, 1)], 500).status == "passed"
    assert checks.single_step_check([pgd], "FGSM", "PGD").status == "not run"


# Item 6: accuracy_vs_steps flags an attack that has not converged.


def test_steps_check_fires_when_100_steps_are_not_enough_and_not_when_converged():
    x, y = eval_points(64)
    model = undefended_digits_model()
    # Steps of eps/400: after 100 steps PGD has used a quarter of the ball.
    slow = suite.accuracy_vs_steps(model, x, y, EPS, "linf", 0, 64, step_size=EPS / 400)
    check = checks.steps_curve_check(slow["points"], len(x))
    assert check.status == "flagged" and "still falling at 100 steps" in check.message, slow
    assert not check.evidence["converged"]
    # The suite's curve (step eps/4) at eps 0.1: it falls a lot early on, then plateaus.
    default = suite.accuracy_vs_steps(model, x, y, 0.1, "linf", 0, 64)
    acc = [p["accuracy"] for p in default["points"]]
    assert acc == sorted(acc, reverse=True) and acc[0] - acc[-1] > 0.2 and acc[-1] > 0.2, acc
    check = checks.steps_curve_check(default["points"], len(x))
    assert check.status == "passed" and check.evidence["converged"], check


def test_steps_check_noise_bound_is_the_sign_test():
    def curve(last_drop, n=200):
        accs = [0.9, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5 - last_drop / n]
        return [{"steps": k, "accuracy": a} for k, a in zip(suite.CURVE_STEPS, accs)]

    assert checks.steps_curve_check(curve(4), 200).status == "passed"  # 2**-4 > 0.05
    assert checks.steps_curve_check(curve(5), 200).status == "flagged"  # 2**-5 < 0.05
    # Large drops before the last step count are the attack working, not a flag.
    assert checks.steps_curve_check(curve(0), 200).evidence["changes"][:2] == [-60, -20]


def test_steps_curve_iterates_are_nested_and_reproducible():
    x, y = eval_points(64)
    model = undefended_digits_model()
    first = suite.accuracy_vs_steps(model, x, y, 0.1, "linf", 7, 64)["points"]
    second = suite.accuracy_vs_steps(model, x, y, 0.1, "linf", 7, 64)["points"]
    assert [p["accuracy"] for p in first] == [p["accuracy"] for p in second]
    # A point of the curve is a fresh PGD with the curve's seed.
    fresh = ProjectedGradientAttack(0.1, 0.025, 5, keep_best=True, seed=7)
    spec = SuiteAttack("fresh", fresh, fresh.config())
    assert run_ensemble(model, x, y, [spec], 0.1).robust_accuracy == first[2]["accuracy"]


# Item 8: accuracy at the radius that reaches every image must be ~0.


def test_eps_check_demands_zero_accuracy_where_every_image_is_reachable():
    def curve(final):
        return [{"eps": e, "accuracy": a} for e, a in [(0, 0.9), (0.3, 0.4), (0.6, 0.1), (1.0, final)]]

    # 9 % on 10 classes is below chance, and still a masking symptom at eps 1.
    check = checks.eps_curve_check(curve(0.09), 100, 10)
    assert check.status == "flagged" and "every image is reachable" in check.message
    assert checks.eps_curve_check(curve(0.02), 100, 10).status == "flagged"
    assert checks.eps_curve_check(curve(0.01), 100, 10).status == "passed"
    # On 50 points a single point is tolerated (1/n > 1 %), two are not.
    assert checks.eps_curve_check(curve(0.02), 50, 10).status == "passed"
    assert checks.eps_curve_check(curve(0.04), 50, 10).status == "flagged"
    # A rise with eps fires on its own, even when the curve ends at zero.
    rise = [{"eps": e, "accuracy": a} for e, a in [(0, 0.9), (0.1, 0.5), (0.3, 0.6), (1.0, 0.0)]]
    check = checks.eps_curve_check(rise, 100, 10)
    assert check.status == "flagged" and "rises between eps [(0.1, 0.3)]" in check.message
    # A model that predicts a single class cannot be driven to zero.
    assert checks.eps_curve_check(curve(0.1), 100, 1).status == "not run"


def test_eps_check_fires_on_a_masked_model_and_not_on_the_honest_one():
    from test_evaluation_suite import Scaled

    x, y = eval_points(64)
    model = undefended_digits_model()
    honest = suite.accuracy_vs_eps(model, x, y, EPS, "linf", 0, 64)["points"]
    assert honest[-1]["eps"] == 1.0
    assert checks.eps_curve_check(honest, len(x), 10).status == "passed", honest
    masked = suite.accuracy_vs_eps(Scaled(model), x, y, EPS, "linf", 0, 64)["points"]
    assert checks.eps_curve_check(masked, len(x), 10).status == "flagged", masked


# Item 5: AutoAttack on the logits and on the raw cosines of an HE head.


def test_raw_output_model_divides_by_the_heads_current_scale():
    x, _ = eval_points(8)
    model = undefended_digits_model(head="he", epochs=5)
    logits = np.asarray(model(x, training=False))
    view = RawOutputModel(model)
    np.testing.assert_allclose(np.asarray(view(x)), logits / 15.0, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(view(x))).max() <= 1.0 + 1e-5
    with pytest.raises(ValueError, match="no HE / m-HE head"):
        RawOutputModel(undefended_digits_model())


# HE paper Table 7: FN in the adversarial objective against a standard model.


def test_fn_view_equals_the_logits_at_the_clean_point_and_ignores_the_feature_norm():
    x, _ = eval_points(8)
    model = undefended_digits_model()
    view = FeatureNormalizedModel(model)
    view.set_reference(x)
    np.testing.assert_allclose(np.asarray(view(x)), np.asarray(model(x, training=False)),
                               rtol=1e-4, atol=1e-4)
    # Its input gradient is the model's with the feature-norm component removed.
    x_t = tf.convert_to_tensor(x)
    label = tf.constant(np.asarray(model(x)).argmax(1))
    grads = []
    for fn in (lambda v: model(v, training=False), view):
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            loss = tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(label, fn(x_t), from_logits=True))
        grads.append(np.asarray(tape.gradient(loss, x_t)))
    assert not np.allclose(grads[0], grads[1], atol=1e-6)
    with pytest.raises(ValueError, match="linear `Dense` head"):
        FeatureNormalizedModel(undefended_digits_model(head="he", epochs=5))


def test_fn_objective_changes_the_attack_only_where_the_feature_norm_varies():
    """Fires: on the undefended CNN, PGD-2 with FN crafts other examples than
    PGD-2 with CE. Must not fire: on a model whose features are normalized
    already (an L2-normalization before its Dense head), FN is the identity and
    both attacks return the same examples."""
    import keras

    x, y = eval_points(32)
    pgd2 = dict(eps=0.2, step_size=0.1, steps=2, random_start="zero")
    model = undefended_digits_model()
    plain = np.asarray(ProjectedGradientAttack(**pgd2)(model, x, y))
    with_fn = OnFeatureNormalized(ProjectedGradientAttack(**pgd2))
    assert with_fn.config()["output"] == "FN logits" and with_fn.config()["steps"] == 2
    assert np.abs(np.asarray(with_fn(model, x, y)) - plain).max() > 0.1

    keras.utils.set_random_seed(0)
    inputs = keras.Input(x.shape[1:])
    z = keras.layers.Flatten()(inputs)
    z = keras.layers.Dense(16, activation="relu")(z)
    z = keras.layers.UnitNormalization()(z)
    normalized = keras.Model(inputs, keras.layers.Dense(10)(z))
    plain = np.asarray(ProjectedGradientAttack(**pgd2)(normalized, x, y))
    with_fn = np.asarray(OnFeatureNormalized(ProjectedGradientAttack(**pgd2))(normalized, x, y))
    # The two graphs agree up to round-off (a second normalization, times a
    # norm of ~1); a sign step can turn that into a flipped pixel here and
    # there, so ask that nearly every pixel agrees.
    assert np.mean(np.abs(with_fn - plain) > 1e-6) < 0.01


def test_standard_preset_runs_autoattack_on_both_outputs_of_an_he_head():
    he_attacks, _ = presets.autoattack_standard(8 / 255, "linf", 0, 10, head="he")
    names = [a.name for a in he_attacks]
    assert names == list(points_lib.AUTOATTACK) + [n + " (logits/s)" for n in points_lib.AUTOATTACK]
    assert {a.chain for a in he_attacks[:4]} == {points_lib.AA_CHAIN}
    assert {a.chain for a in he_attacks[4:]} == {points_lib.AA_RAW_CHAIN}
    for logits_attack, raw_attack in zip(he_attacks[:4], he_attacks[4:]):
        assert isinstance(raw_attack.attack, OnRawOutput)
        assert raw_attack.config["output"] == "logits / s"
        assert raw_attack.kind == logits_attack.kind and not raw_attack.standalone
    linear, _ = presets.autoattack_standard(8 / 255, "linf", 0, 10, head="linear")
    assert [a.name for a in linear] == list(points_lib.AUTOATTACK)
    _, skipped = presets.autoattack_standard(8 / 255, "linf", 0, 10, head="unknown")
    assert points_lib.AA_RAW_CHAIN in [s["name"] for s in skipped]


def test_autoattack_budget_scales_every_attack_of_the_chain():
    def iterations(attacks):
        return {a.name: a.config.get("steps", a.config.get("n_queries")) for a in attacks}

    full, _ = presets.autoattack_standard(8 / 255, "linf", 0, 10)
    assert iterations(full) == {"APGD-CE": 100, "APGD-T": 100, "FAB-T": 100, "Square": 5000}
    tenth, _ = presets.autoattack_standard(8 / 255, "linf", 0, 10, budget=0.1)
    assert iterations(tenth) == {"APGD-CE": 10, "APGD-T": 10, "FAB-T": 10, "Square": 500}
    assert [a.attack.steps for a in tenth[:3]] == [10, 10, 10] and tenth[3].attack.n_queries == 500
    assert {a.config["n_target_classes"] for a in tenth[1:3]} == {9}  # targets are not cut
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="budget"):
            presets.autoattack_standard(8 / 255, "linf", 0, 10, budget=bad)


def test_headline_bookkeeping_with_fake_chains():
    """Chain A breaks points {1, 2}, chain B breaks {2, 3} (B runs on the raw
    output). A = B = (c - 2)/n but the worst case is (c - 3)/n, not min(A, B)."""
    x, y = eval_points(40)
    model = undefended_digits_model(head="he", epochs=5)
    pred = np.asarray(model(x, training=False)).argmax(1)
    correct = np.flatnonzero(pred == y)
    a_ids, b_ids = set(correct[[1, 2]]), set(correct[[2, 3]])
    donor = {c: x[np.flatnonzero(pred == c)[0]] for c in np.unique(pred)}

    class Breaks:
        name, eps, norm = "breaks", 1.0, "linf"

        def __init__(self, ids, expect_raw):
            self.ids, self.expect_raw, self.seen = ids, expect_raw, 0

        def config(self):
            return {"name": self.name}

        def __call__(self, m, xb, yb):
            # The raw chain must see logits / s (cosines in [-1, 1]), the other the logits.
            out = np.asarray(m(xb, training=False))
            assert (np.abs(out).max() <= 1.0 + 1e-5) == self.expect_raw
            self.seen += len(xb)
            xb = np.array(xb)
            for i, point in enumerate(xb):
                index = int(np.flatnonzero((x == point).all(axis=(1, 2, 3)))[0])
                if index in self.ids:
                    other = next(c for c in donor if c != y[index])
                    xb[i] = donor[other]
            return xb

    first_a, first_b = Breaks(a_ids, False), Breaks(b_ids, True)
    specs = [SuiteAttack(n, first_a if i == 0 else Breaks(set(), False), {}, "white-box", False, points_lib.AA_CHAIN)
             for i, n in enumerate(points_lib.AUTOATTACK)]
    specs += [SuiteAttack(n + points_lib.RAW_SUFFIX, OnRawOutput(first_b if i == 0 else Breaks(set(), True)), {},
                          "white-box", False, points_lib.AA_RAW_CHAIN)
              for i, n in enumerate(points_lib.AUTOATTACK)]
    result = run_ensemble(model, x, y, specs, eps=1.0, batch_size=16)
    headline = suite._headline(result, "he")
    n, c = len(x), len(correct)
    assert headline["AutoAttack-standard"] == pytest.approx((c - 3) / n)
    assert headline["AutoAttack-standard on logits s·cos θ"] == pytest.approx((c - 2) / n)
    raw_key = "AutoAttack-standard on raw cosines cos θ (logits / s, as RobustBench)"
    assert headline[raw_key] == pytest.approx((c - 2) / n)
    # The raw chain is exact: its first attack saw every clean-correct point,
    # not only those the logits chain left.
    assert first_b.seen == c and first_a.seen == c
    assert result.robust_accuracy == pytest.approx((c - 3) / n)
    # The shared point counts once, for the chain that broke it first.
    assert [r.n_broken for r in result.attacks] == [2, 0, 0, 0, 1, 0, 0, 0]
    assert result.broken_by[sorted(a_ids | b_ids)].tolist() == [0, 0, 4]


# Item 15: the ensemble re-checks attack outputs inside the box [0, 1].


def test_ensemble_clips_reprojected_outputs_to_the_box():
    """A model fooled only by pixels above 1: an attack that pushes a bright
    pixel to 1 + eps is inside the eps-ball but outside the box, and must not
    count."""
    x = np.full((6, 2, 2, 1), 0.5, np.float32)
    x[:, 0, 0, 0] = 0.95
    y = np.zeros(6, np.int32)

    def model(inputs, training=False):
        over = tf.cast(tf.reduce_max(tf.reshape(inputs, [tf.shape(inputs)[0], -1]), 1) > 1.0, tf.int32)
        return 5.0 * tf.one_hot(over, 2)

    class PushUp:
        name, eps, norm = "push", 0.1, "linf"

        def __call__(self, m, xb, yb):
            return np.asarray(xb) + 0.1

    proj, outside, _ = threat_model_projection(x, x + 0.1, 0.1, "linf")
    assert proj.max() <= 1.0 and outside.all()
    result = run_ensemble(model, x, y, [SuiteAttack("push", PushUp(), {})], eps=0.1)
    assert result.clean_accuracy == 1.0
    assert result.robust_accuracy == 1.0 and result.attacks[0].n_outside_ball == 6


def test_margin_report_states_its_pgd_from_the_attacks_config():
    from he_keras.evaluation import margin

    def linear(x, training=False):
        z = tf.reduce_sum(tf.reshape(tf.convert_to_tensor(x, tf.float32), [tf.shape(x)[0], -1]), 1)
        return tf.stack([z, 1.0 - z], axis=1)

    x = np.random.default_rng(0).uniform(0.2, 0.4, (6, 2, 2, 1)).astype(np.float32)
    settings = margin.margin_report(linear, linear, x, eps=0.1, cap=3.0, seed=4)["settings"]
    assert settings["pgd"] == margin.direction_attack(0.1, seed=4).config()
    assert settings["pgd"]["steps"] == 20 and settings["pgd"]["step_size"] == pytest.approx(0.025)


def test_report_holds_the_settings_an_adaptive_attack_used_on_the_model():
    # Temperature-PGD and HE-adaptive learn the head and its scale only when
    # they run: the report must carry those effective settings.
    from he_keras.attacks import HEAdaptivePGD, TemperaturePGD

    model = undefended_digits_model("he", epochs=8)
    _, _, x, y = digits_arrays()
    specs = [
        SuiteAttack("Temperature-PGD", attack, attack.config())
        for attack in (TemperaturePGD(0.1, 0.025, 2, temperatures=(0.1,), seed=0),
                       HEAdaptivePGD(0.1, 0.025, 2, seed=0))
    ]
    result = run_ensemble(model, x[:16], y[:16], specs, 0.1)
    temperature, adaptive = (r.config for r in result.attacks)
    assert temperature["last_model"]["head"] == "he"
    assert temperature["inverse_temperatures_on_logits"] == pytest.approx(
        [10.0 / temperature["last_model"]["s"]])
    assert adaptive["objectives_run"] == ["raw_ce", "dlr", "cw"]


def test_points_report_per_point_outcomes_that_add_up_to_the_reported_accuracies():
    model, x, y = undefended_digits_model(), *eval_points(96)
    weak = ProjectedGradientAttack(eps=0.03, step_size=0.03, steps=1, seed=1)
    strong = ProjectedGradientAttack(eps=0.1, step_size=pgd_step_size(0.1, 10), steps=10, seed=2)
    attacks = [SuiteAttack("weak", weak, weak.config()),
               SuiteAttack("chain-1", weak, weak.config(), standalone=False, chain="c"),
               SuiteAttack("chain-2", strong, strong.config(), standalone=False, chain="c"),
               SuiteAttack("strong", strong, strong.config(), standalone=False)]
    report = evaluate(model, x, y, 10, attacks=attacks, eps=EPS, curves=False, points=True)
    points = report["points"]
    outcomes = points_lib.decode(points)
    flags = outcomes["survivors"]
    # The format's owner reads what the suite wrote: one character per point.
    assert all(set(v) <= {"0", "1"} and len(v) == len(y) for v in points["survivors"].values())
    assert points_lib.encode_flags(flags["weak"]) == points["survivors"]["weak"]
    assert points["labels"] == [int(v) for v in y] and np.array_equal(outcomes["labels"], y)
    assert outcomes["clean"].mean() == report["clean_accuracy"]
    assert outcomes["robust"].mean() == report["robust_accuracy"]
    by_name = {a["name"]: a for a in report["attacks"]}
    assert flags["weak"].mean() == by_name["weak"]["accuracy"]
    assert flags["chain-2"].mean() == by_name["chain-2"]["chain_accuracy"]
    assert not np.any(flags["chain-2"] & ~flags["chain-1"])  # a chain only loses points
    assert flags["strong"].mean() == by_name["strong"]["cumulative_accuracy"]
    assert 0 < flags["strong"].mean() < flags["weak"].mean()  # the attacks really differ here
    assert "points" not in evaluate(model, x, y, 10, attacks=attacks[:1], eps=EPS, curves=False)


def test_chain_survivors_read_the_last_attack_of_each_autoattack_chain():
    points = {"labels": [0, 1, 2], "clean": "111", "robust": "000",
              "survivors": {"APGD-CE": "110", "Square": "100", "Square (logits/s)": "010"}}
    assert points_lib.chain_survivors(points).tolist() == [True, False, False]
    assert points_lib.chain_survivors(points, raw=True).tolist() == [False, True, False]
    assert points_lib.has_raw_chain(points)
    del points["survivors"]["Square (logits/s)"]
    assert not points_lib.has_raw_chain(points)
    with pytest.raises(KeyError):
        points_lib.chain_survivors(points, raw=True)
