"""Worst-case bookkeeping, class-wise counts and checks with hand-made fakes.

The toy model reads a point's class from pixel (0, 0) and shifts its
prediction by one class when pixel (0, 1) exceeds 0.2; pixel (1, 0) holds
the point's id. Fake attacks push pixel (0, 1) of chosen ids, so which
points each attack breaks is known exactly.
"""

import numpy as np
import pytest
import tensorflow as tf

from he_keras.evaluation import checks, classwise
from he_keras.evaluation.ensemble import SuiteAttack, run_ensemble, threat_model_projection

C = 4
N = 40


def toy_model(x, training=False):
    x = tf.convert_to_tensor(x, tf.float32)
    cls = tf.cast(tf.round(x[:, 0, 0, 0] * 10), tf.int32)
    shift = tf.cast(x[:, 0, 1, 0] > 0.2, tf.int32)
    return 10.0 * tf.one_hot((cls + shift) % C, C)


def toy_data():
    y = np.arange(N) % C
    x = np.zeros((N, 2, 2, 1), np.float32)
    x[:, 0, 0, 0] = y / 10
    x[:, 1, 0, 0] = np.arange(N) / 100
    # Points 0, 5 and 9 are misclassified when clean.
    x[[0, 5, 9], 0, 1, 0] = 0.21
    return x, y.astype(np.int32)


def ids(x):
    return set(np.round(np.asarray(x)[:, 1, 0, 0] * 100).astype(int).tolist())


class PushIds:
    """Pushes pixel (0, 1) by `amount` on the points whose id is in `targets`."""

    def __init__(self, targets, amount=0.25, value=None):
        self.targets = set(targets)
        self.amount = amount
        self.value = value
        self.seen = set()

    def __call__(self, model, x, y):
        x = np.array(x)
        self.seen |= ids(x)
        hit = np.isin(np.round(x[:, 1, 0, 0] * 100).astype(int), list(self.targets))
        x[hit, 0, 1, 0] += self.amount
        if self.value is not None:
            x[hit] = self.value
        return x


def spec(name, attack, standalone=False, kind="white-box"):
    return SuiteAttack(name, attack, {"targets": sorted(attack.targets)}, kind, standalone)


def test_point_broken_by_any_attack_is_non_robust():
    x, y = toy_data()
    first, second = PushIds({1, 2, 3}), PushIds({3, 4, 6})
    result = run_ensemble(toy_model, x, y, [spec("a", first), spec("b", second)], eps=0.3, batch_size=7)
    clean_correct = set(range(N)) - {0, 5, 9}
    assert result.clean_accuracy == pytest.approx(37 / 40)
    assert set(np.flatnonzero(result.robust)) == clean_correct - {1, 2, 3, 4, 6}
    assert result.robust_accuracy == pytest.approx(32 / 40)
    # The second attack only ran on still-robust points; clean errors are never attacked.
    assert first.seen == clean_correct
    assert second.seen == clean_correct - {1, 2, 3}
    assert [r.n_broken for r in result.attacks] == [3, 2]
    assert result.broken_by[[1, 2, 3, 4, 6]].tolist() == [0, 0, 0, 1, 1]
    cumulative = [r.cumulative_accuracy for r in result.attacks]
    assert cumulative == sorted(cumulative, reverse=True)
    assert cumulative[-1] == result.robust_accuracy
    assert result.attacks[1].accuracy is None


def test_standalone_attack_sees_all_clean_correct_points_and_reports_its_own_accuracy():
    x, y = toy_data()
    first, second = PushIds({1, 2}), PushIds({2, 7})
    result = run_ensemble(
        toy_model, x, y, [spec("a", first, True), spec("b", second, True)], eps=0.3
    )
    assert second.seen == set(range(N)) - {0, 5, 9}
    assert result.attacks[1].accuracy == pytest.approx(35 / 40)
    assert result.attacks[1].n_broken == 1  # point 2 was already broken
    assert not result.attacks[1].correct[[0, 2, 5, 7, 9]].any()


def test_outputs_outside_the_threat_model_cannot_claim_success():
    x, y = toy_data()
    # Moves pixel (0, 1) by 0.9: outside eps=0.1, projected back to +0.1 -> still correct.
    too_far = PushIds({1, 2}, amount=0.9)
    nan = PushIds({3}, value=np.nan)
    result = run_ensemble(toy_model, x, y, [spec("far", too_far), spec("nan", nan)], eps=0.1)
    assert result.robust_accuracy == result.clean_accuracy
    assert result.attacks[0].n_outside_ball == 2
    assert result.attacks[1].n_nonfinite == 1
    assert result.attacks[0].n_broken == result.attacks[1].n_broken == 0


def test_projection_maps_into_ball_and_box():
    x = np.full((2, 3, 3, 1), 0.5, np.float32)
    raw = x + np.array([0.7, -0.05], np.float32).reshape(2, 1, 1, 1)
    proj, outside, nonfinite = threat_model_projection(x, raw, 0.1, "linf")
    assert np.abs(proj - x).max() <= 0.1 + 1e-7
    assert outside.tolist() == [True, False] and not nonfinite.any()
    proj, outside, _ = threat_model_projection(x, raw, 0.5, "l2")
    assert np.linalg.norm((proj - x).reshape(2, -1), axis=1).max() <= 0.5 + 1e-6
    assert proj.max() <= 1.0


def test_classwise_counts_sum_to_totals():
    x, y = toy_data()
    result = run_ensemble(
        toy_model, x, y, [spec("a", PushIds({1, 2, 3}), True), spec("b", PushIds({4, 6}))], eps=0.3
    )
    logits = np.asarray(toy_model(x))
    report = classwise.classwise_report(result, logits, C)
    assert sum(report["clean"]["n"]) == N
    assert sum(report["clean"]["correct"]) == result.clean_correct.sum()
    assert sum(report["worst_case"]["correct"]) == result.robust.sum()
    assert sum(report["attacks"]["a"]["correct"]) == result.attacks[0].accuracy * N
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == N
    assert np.trace(matrix) == result.robust.sum()
    assert matrix.sum(axis=1).tolist() == report["clean"]["n"]
    # Point 1 (class 1) was pushed to class 2.
    assert matrix[1, 2] >= 1
    assert report["weight_norms"] is None


def test_black_box_check_flags_extra_breaks_after_white_box():
    x, y = toy_data()
    result = run_ensemble(
        toy_model, x, y,
        [spec("pgd", PushIds({1})), spec("square", PushIds({2, 3}), kind="black-box")],
        eps=0.3,
    )
    check = checks.black_box_check(result.attacks, result.n)
    assert check.flagged and check.evidence["extra_broken_fraction"] == {"square": 2 / N}
    clean = checks.black_box_check(result.attacks[:1], result.n)
    assert not clean.flagged


def test_curve_and_single_step_checks():
    flat = [{"eps": e, "accuracy": a} for e, a in [(0, 0.9), (0.1, 0.5), (0.3, 0.55), (1.0, 0.4)]]
    check = checks.eps_curve_check(flat, 100, 10)
    assert check.flagged and check.evidence["rises"] == [(0.1, 0.3)]
    good = [{"eps": e, "accuracy": a} for e, a in [(0, 0.9), (0.1, 0.5), (1.0, 0.0)]]
    assert not checks.eps_curve_check(good, 100, 10).flagged
    steps = [{"steps": s, "accuracy": a} for s, a in [(1, 0.5), (10, 0.3), (100, 0.45)]]
    assert checks.steps_curve_check(steps, 100).evidence["rises_at_steps"] == [100]
    x, y = toy_data()
    result = run_ensemble(
        toy_model, x, y, [spec("FGSM", PushIds({1, 2}), True), spec("PGD-20", PushIds({1}), True)],
        eps=0.3,
    )
    assert checks.single_step_check(result.attacks, "FGSM", "PGD-20").flagged


def test_softmax_and_randomness_checks():
    logits = np.random.default_rng(0).normal(size=(8, C))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert checks.softmax_output_check(probs).flagged
    assert not checks.softmax_output_check(logits).flagged
    x, _ = toy_data()
    assert not checks.randomness_check(toy_model, x).flagged
    rng = tf.random.Generator.from_seed(0)

    def noisy(x, training=False):
        return toy_model(x) + rng.normal([len(x), C])

    assert checks.randomness_check(noisy, x).flagged


@pytest.mark.parametrize("head", ["linear", "he"])
def test_weight_norms_read_the_unnormalized_classifier_kernel(head):
    from he_keras.models import build_model, find_head

    model = build_model("small_cnn", (8, 8, 1), C, head=head)
    layer = find_head(model) if head == "he" else model.layers[-1]
    kernel = np.asarray(layer.kernel)
    kernel[:, 1] *= 3.0  # HE normalizes columns in its forward pass, not in the variable.
    layer.kernel.assign(kernel)
    norms = classwise.classifier_weight_norms(model, C)
    assert np.allclose(norms, np.linalg.norm(kernel, axis=0), rtol=1e-6)
    assert classwise.classifier_weight_norms(toy_model, C) is None
    corr = classwise.spearman(norms, norms + 1.0)
    assert corr["rho"] == pytest.approx(1.0)


class NormedPush(PushIds):
    """`PushIds` that also exposes per-point values, as RayS' distances."""

    def __call__(self, model, x, y):
        self.last_norms = np.asarray(x)[:, 1, 0, 0] * 100
        return super().__call__(model, x, y)


def chained_attacks():
    """A standalone attack, a two-member chain and a cascaded attack, with fresh state."""
    return [
        SuiteAttack("alone", NormedPush({1, 2, 11}), {}, "white-box", True),
        SuiteAttack("c1", PushIds({2, 3, 21}), {}, "white-box", False, chain="c"),
        SuiteAttack("c2", PushIds({3, 4, 33}), {}, "white-box", False, chain="c"),
        SuiteAttack("late", PushIds({4, 6, 12, 38}), {}, "black-box", False),
    ]


@pytest.mark.parametrize("sizes", [(40,), (13, 13, 14), (7, 30, 3), (20, 20)])
def test_merged_chunks_give_the_result_of_one_pass(sizes):
    from he_keras.evaluation.ensemble import merge_results

    x, y = toy_data()
    whole = run_ensemble(toy_model, x, y, chained_attacks(), eps=0.3, batch_size=6)
    bounds = np.cumsum((0,) + sizes)
    attacks = chained_attacks()  # One set of attacks runs on every chunk, as in evaluate_chunks.
    parts = [
        run_ensemble(toy_model, x[lo:hi], y[lo:hi], attacks, eps=0.3, batch_size=6)
        for lo, hi in zip(bounds[:-1], bounds[1:])
    ]
    merged = merge_results(parts)
    for field in ("labels", "clean_pred", "clean_correct", "robust", "adv_pred", "broken_by"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(whole, field), err_msg=field)
    np.testing.assert_array_equal(merged.chain_robust["c"], whole.chain_robust["c"])
    # The cascade is per point: point 4 falls to the chain (c2), so `late`
    # breaks 6, 12 and 38 only; point 33 is hit only inside the chain.
    assert whole.broken_by[[1, 2, 3, 4, 6, 12, 38]].tolist() == [0, 0, 1, 2, 3, 3, 3]
    for got, want in zip(merged.attacks, whole.attacks):
        got, want = got.to_json(), want.to_json()
        got.pop("seconds"), want.pop("seconds")
        assert got == want
    assert merged.attacks[0].summary["last_norms"]["n"] == 37


def test_merge_refuses_results_of_other_attacks():
    from he_keras.evaluation.ensemble import merge_results

    x, y = toy_data()
    one = run_ensemble(toy_model, x[:20], y[:20], chained_attacks()[:2], eps=0.3)
    other = run_ensemble(toy_model, x[20:], y[20:], chained_attacks()[:1], eps=0.3)
    with pytest.raises(ValueError, match="same attacks"):
        merge_results([one, other])
    with pytest.raises(ValueError, match="at least one"):
        merge_results([])


def test_evaluate_chunks_keeps_one_chunk_of_images_and_reports_every_point():
    import gc
    import weakref

    from he_keras.evaluation import evaluate, evaluate_chunks

    x, y = toy_data()
    alive = []

    def chunks(size):
        for lo in range(0, N, size):
            gc.collect()
            # The suite holds no image of an earlier chunk once it asks for the next.
            assert not [ref for ref in alive if ref() is not None], f"chunk before {lo} still held"
            chunk = x[lo : lo + size].copy()
            alive.append(weakref.ref(chunk))
            yield chunk, y[lo : lo + size]
            del chunk

    common = dict(num_classes=C, eps=0.3, batch_size=6, curves=False, points=True)
    chunked = evaluate_chunks(toy_model, chunks(15), attacks=chained_attacks(), **common)
    whole = evaluate(toy_model, x, y, attacks=chained_attacks(), **common)
    assert len(alive) == 3 and chunked["settings"]["chunks"] == 3
    assert chunked["settings"]["n"] == whole["settings"]["n"] == N
    for key in ("clean_accuracy", "robust_accuracy", "n_clean_correct", "n_robust", "points"):
        assert chunked[key] == whole[key], key
    assert [a["n_broken"] for a in chunked["attacks"]] == [a["n_broken"] for a in whole["attacks"]]
    checks = {c["name"]: c["status"] for c in chunked["checks"]}
    assert checks == {c["name"]: c["status"] for c in whole["checks"]}
    with pytest.raises(ValueError, match="no test point"):
        evaluate_chunks(toy_model, [], attacks=chained_attacks(), **common)
    bad = x[:10].copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="chunk 2"):
        evaluate_chunks(toy_model, [(x[:10], y[:10]), (bad, y[:10])], attacks=chained_attacks(), **common)
