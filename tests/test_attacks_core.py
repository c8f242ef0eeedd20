"""The projected-gradient attack core."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from he_keras.attacks import ProjectedGradientAttack, fgsm, project
from he_keras.profiling import kernel_times
from helpers import accuracy, digits_arrays, undefended_digits_model


@pytest.fixture(scope="module")
def model():
    return undefended_digits_model()


@pytest.fixture(scope="module")
def test_data():
    _, _, x, y = digits_arrays()
    return x[:128], y[:128]


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
@pytest.mark.parametrize("start", ["zero", "uniform", "normal"])
def test_perturbation_within_ball_and_box(model, test_data, norm, eps, start):
    x, y = test_data
    attack = ProjectedGradientAttack(eps, eps / 4, 5, norm=norm, random_start=start, seed=0)
    x_adv = attack(model, x, y).numpy()
    delta = (x_adv - x).reshape(len(x), -1)
    if norm == "linf":
        assert np.abs(delta).max() <= eps + 1e-6
    else:
        assert np.linalg.norm(delta, axis=1).max() <= eps + 1e-5
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(delta).max() > 0.5 * (eps if norm == "linf" else eps / 8)


def test_pgd20_breaks_undefended_model(model, test_data):
    x, y = test_data
    assert accuracy(model, x, y) > 0.9
    x_adv = ProjectedGradientAttack(0.3, 0.03, 20, seed=0)(model, x, y)
    assert accuracy(model, x_adv, y) < 0.10


def test_pgd_at_most_fgsm(model, test_data):
    x, y = test_data
    eps = 0.1
    fgsm_acc = accuracy(model, fgsm(eps)(model, x, y), y)
    pgd_acc = accuracy(model, ProjectedGradientAttack(eps, eps / 8, 20, seed=0)(model, x, y), y)
    assert pgd_acc <= fgsm_acc
    assert fgsm_acc < accuracy(model, x, y)


def test_no_retracing_on_second_call(model, test_data):
    x, y = test_data
    attack = ProjectedGradientAttack(0.1, 0.02, 3, seed=0)
    attack(model, x, y)
    attack(model, x + 0.0, y)
    assert attack.trace_count == 1


def test_seed_makes_random_start_reproducible(model, test_data):
    x, y = test_data
    a = ProjectedGradientAttack(0.1, 0.02, 2, seed=3)(model, x, y).numpy()
    b = ProjectedGradientAttack(0.1, 0.02, 2, seed=3)(model, x, y).numpy()
    c = ProjectedGradientAttack(0.1, 0.02, 2, seed=4)(model, x, y).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0


def test_keep_best_never_worse_than_last_iterate(model, test_data):
    x, y = test_data
    last = ProjectedGradientAttack(0.08, 0.04, 10, seed=0)(model, x, y)
    best = ProjectedGradientAttack(0.08, 0.04, 10, seed=0, keep_best=True)(model, x, y)
    assert accuracy(model, best, y) <= accuracy(model, last, y)


def test_targeted_reaches_target(model, test_data):
    x, y = test_data
    target = (y + 1) % 10
    x_adv = ProjectedGradientAttack(0.3, 0.03, 20, targeted=True, seed=0)(model, x, target)
    pred = np.argmax(model.predict(x_adv.numpy(), verbose=0), 1)
    assert np.mean(pred == target) > 0.9


def test_gradients_only_wrt_input(model, test_data):
    x, y = test_data
    before = [w.numpy().copy() for w in model.weights]
    ProjectedGradientAttack(0.1, 0.02, 3, seed=0)(model, x, y)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_project_l2():
    delta = tf.constant([[3.0, 4.0], [0.3, 0.4]])
    np.testing.assert_allclose(project(delta, 1.0, "l2").numpy(), [[0.6, 0.8], [0.3, 0.4]], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(eps=-0.1, step_size=0.1, steps=1), "eps"),
        (dict(eps=1.5, step_size=0.1, steps=1), "eps"),
        (dict(eps=0.1, step_size=0.0, steps=1), "step_size"),
        (dict(eps=0.1, step_size=0.1, steps=-2), "steps"),
        (dict(eps=0.1, step_size=0.1, steps=1, norm="l1"), "norm"),
        (dict(eps=0.1, step_size=0.1, steps=1, random_start="gauss"), "random_start"),
        (dict(eps=float("nan"), step_size=0.1, steps=1), "eps"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProjectedGradientAttack(**kwargs)


def test_the_core_and_training_steps_trace_without_autograph(monkeypatch, test_data):
    """AutoGraph converted the loop and all it calls (objective, the trainer's
    attack objective) at a training run's first trace: over half of it."""
    import keras
    from tensorflow.python.autograph.impl import api

    from he_keras.models import build_model
    from he_keras.training import PGDAT, TRADES

    converted = []
    convert = api._convert_actual
    monkeypatch.setattr(api, "_convert_actual", lambda f, *a: converted.append(f) or convert(f, *a))

    def needs_autograph(t):
        if t > 0:
            t = -t
        return t

    tf.function(needs_autograph)(tf.constant(1.0))
    assert converted, "the conversion counter does not see AutoGraph convert"
    converted.clear()
    x, y = test_data
    classifier = build_model("small_cnn", (8, 8, 1), 10, head="he", s=15.0)
    for attack in (
        ProjectedGradientAttack(0.1, 0.02, 3, keep_best=True, seed=0),
        ProjectedGradientAttack(1.0, 0.2, 3, norm="l2", random_start="normal", objective="kl", seed=0),
    ):
        assert attack(classifier, x, y).shape == x.shape
    for framework in (PGDAT, TRADES):
        trainer = framework(classifier, eps=0.1, step_size=0.02, steps=2, seed=0)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = trainer.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
    assert not converted, f"converted by AutoGraph: {converted}"


def test_a_users_model_function_and_objective_still_get_autograph(test_data):
    """Only he-keras', Keras' and TF's own code skips AutoGraph: a user's
    callables may use `len()` and Python `if` on tensors, as in a tf.function."""
    x, y = test_data
    w = tf.constant(np.random.default_rng(0).normal(size=(64, 10)), tf.float32)

    def linear_model(images, training=False):
        flat = tf.reshape(images, [len(images), -1])
        if tf.reduce_sum(flat) > 0:  # A tensor condition: needs AutoGraph.
            flat = flat * 1.0
        return tf.matmul(flat, w)

    def hinge(labels, logits, reference):
        margin = tf.reduce_sum(logits * tf.one_hot(labels, 10), -1) - tf.reduce_max(logits, -1)
        if tf.reduce_any(margin < 0):
            margin = margin * 1.0
        return -margin

    attack = ProjectedGradientAttack(0.1, 0.02, 5, objective=hinge, seed=0)
    x_adv = attack(linear_model, x, y).numpy()
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and np.abs(x_adv - x).max() > 0.05
    logits = linear_model(tf.constant(x))
    after = linear_model(tf.constant(x_adv))
    margin_of = lambda out: (tf.reduce_sum(out * tf.one_hot(y, 10), -1) - tf.reduce_max(out, -1)).numpy()
    assert margin_of(after).mean() < margin_of(logits).mean()


def test_kernel_times_count_each_kernels_calls(tmp_path):
    """The profile totals what ran: three calls of a function with one `Sin`
    and two `Cos` ops, and nothing that did not run."""
    @tf.function
    def step(x):
        return tf.sin(x) + tf.cos(x) * tf.cos(2.0 * x)

    x = tf.random.uniform([256, 256])
    step(x)  # traced before the profiled calls
    times = kernel_times(lambda: [step(x).numpy() for _ in range(3)], tmp_path)
    assert times["Sin"].calls == 3 and times["Cos"].calls == 6, times
    assert times["Sin"].seconds > 0 and "Tan" not in times


def test_attack_loops_run_onednns_max_pool_gradient_like_a_plain_step(tmp_path, test_data):
    """In a lowered `tf.while_loop`, oneDNN's layout pass could visit the
    max-pooling gradient before its forward op and leave it on the plain
    kernel, about 7x slower on the quickstart net. Which trace it hit varied
    (4 of 12 traces of the PGD loop, 2 of 12 of APGD's): 8 fresh traces of
    each, then FAB-T, CW-L2 and a TRADES step. Every gradient loop now
    computes its gradients in a `loop_step` (DeepFool's batch Jacobian, which
    pfor vectorizes, still runs the plain kernel)."""
    import keras

    from he_keras.attacks import APGD, CarliniWagnerL2, FABTargeted
    from he_keras.models import build_model
    from he_keras.training import TRADES

    x, y = (tf.constant(t[:32]) for t in test_data)
    keras.utils.set_random_seed(0)
    classifier = build_model("small_cnn", (8, 8, 1), 10, head="he", s=15.0)
    trainer = TRADES(classifier, eps=0.1, step_size=0.02, steps=2, seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    attacks = {
        "PGD": [ProjectedGradientAttack(0.1, 0.02, 2, seed=i) for i in range(8)],
        "APGD": [APGD(0.1, steps=2, seed=i) for i in range(8)],
        "FAB-T": [FABTargeted(0.1, steps=2, n_target_classes=2, seed=0)],
        "CW-L2": [CarliniWagnerL2(1.0, steps=2, binary_search_steps=1)],
    }
    runs = {
        name: [functools.partial(attack, classifier, x, y) for attack in group]
        for name, group in attacks.items()
    }
    runs["TRADES step"] = [functools.partial(trainer.fit, x, y, batch_size=32, epochs=1, verbose=0)]
    plain = []
    for name, group in runs.items():
        for run in group:
            run()  # Traced before the profiled calls.
        kernels = kernel_times(lambda: [run() for run in group], tmp_path / name.replace(" ", "_"))
        if not any(k.startswith("_MklNative") for k in kernels):
            pytest.skip(f"TensorFlow's oneDNN kernels are off here (ran {sorted(kernels)[:8]} ...)")
        assert "_MklNativeMaxPoolGrad" in kernels or "MaxPoolGrad" in kernels, (name, kernels)
        if "MaxPoolGrad" in kernels:
            plain.append(name)
    assert not plain, f"the plain max-pooling gradient ran in {plain}"
