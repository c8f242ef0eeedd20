"""Automatic gradient-masking checks: each returns a flag with its evidence.

They mirror AutoAttack's checks (zero gradients, randomness, softmax output,
Square beating the white-box attacks by more than 0.2 pp) and the sanity
tests of Carlini et al. (2019) / Athalye et al. (2018): accuracy must fall as
eps grows and reach zero at a radius that reaches every image, the attack must
have converged (more iterations stop changing the result), and a single-step
attack must not beat an iterative one. A flag is evidence to look at, not a
verdict.

Every check ends in one of three states: `passed`, `flagged` (it fired) or
`not run` (it had nothing to decide on, e.g. no black-box attack ran); a check
that did not run never reads as passed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from he_keras import losses
from he_keras.evaluation.ensemble import AttackResult

# AutoAttack flags black-box success beyond the white-box attacks above this.
BLACK_BOX_MARGIN = 0.002
# Tolerances of the curve checks (accuracy units): random starts and float
# round-off move a point or two on small evaluation sets.
CURVE_TOLERANCE = 0.01
# At a radius that reaches every image the true accuracy is 0; PGD-20 may miss
# a handful of points, so up to 1 % of them (at least one point) is tolerated.
TOP_RADIUS_TOLERANCE = 0.01
# Significance level of the one-sided sign test on the points that change
# between two step counts: k changes in one direction are beyond noise when
# 2**-k < 0.05, i.e. k >= 5.
SIGN_TEST_ALPHA = 0.05
SOFTMAX_TOLERANCE = 1e-5
RANDOMNESS_TOLERANCE = 1e-4

PASSED = "passed"
FLAGGED = "flagged"
NOT_RUN = "not run"
STATUSES = (PASSED, FLAGGED, NOT_RUN)


@dataclasses.dataclass
class Check:
    """The outcome of one check.

    Attributes:
        name: Identifier, e.g. `"zero_gradients"`.
        status: `"passed"`, `"flagged"` (the check found a symptom of
            gradient masking or of a broken evaluation) or `"not run"` (it had
            nothing to decide on; `message` says why).
        message: One sentence for humans.
        evidence: The numbers behind the decision.
    """

    name: str
    status: str
    message: str
    evidence: dict

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"`status` must be one of {STATUSES}. Received: status={self.status!r}")

    @classmethod
    def decided(cls, name: str, flagged: bool, message: str, evidence: dict) -> "Check":
        """A check that ran: `flagged` or `passed`."""
        return cls(name, FLAGGED if flagged else PASSED, message, evidence)

    @property
    def flagged(self) -> bool:
        """True if the check fired."""
        return self.status == FLAGGED

    def to_json(self) -> dict:
        """The JSON-ready record (`flagged` repeats `status == "flagged"`)."""
        return {**dataclasses.asdict(self), "flagged": self.flagged}


def not_run(name: str, reason: str, evidence: Optional[dict] = None) -> Check:
    """A check that could not decide, with the reason.

    Args:
        name: Identifier of the check.
        reason: Why it did not run, e.g. `"no black-box attack ran"`.
        evidence: Optional numbers.

    Returns:
        A `Check` with status `"not run"`.
    """
    return Check(name, NOT_RUN, reason, evidence or {})


def beyond_noise(changed: int) -> bool:
    """One-sided sign test: are `changed` points, all moving one way, beyond noise?

    Under the null hypothesis each changed point moves either way with
    probability 1/2, so all `changed` move the same way with probability
    `2**-changed`; below `SIGN_TEST_ALPHA` (`changed >= 5`) it is an effect.
    """
    return changed > 0 and 0.5**changed < SIGN_TEST_ALPHA


def _input_gradients(
    model: Callable, x: np.ndarray, y: np.ndarray, loss: Callable
) -> np.ndarray:
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(tf.convert_to_tensor(y), model(x, training=False))
    grad = tape.gradient(value, x)
    if grad is None:
        return np.zeros(x.shape, np.float32)
    return np.asarray(grad)


def zero_gradient_check(
    model: Callable, x: np.ndarray, y: np.ndarray, batch_size: int = 128
) -> Check:
    """Counts examples whose input gradient is exactly zero.

    Both the cross-entropy gradient (vanishes when the softmax saturates,
    e.g. huge logit scales) and the scale-invariant DLR gradient (vanishes
    under non-differentiable preprocessing such as quantization) are checked
    on the given (clean-correct) points.

    Args:
        model: Callable returning logits.
        x: Inputs.
        y: Labels.
        batch_size: Batch size.

    Returns:
        A `Check`, flagged if any gradient is all zeros.
    """
    counts = {"ce": 0, "dlr": 0}
    objectives = {"ce": losses.cross_entropy, "dlr": losses.dlr}
    for lo in range(0, len(x), batch_size):
        xb, yb = x[lo : lo + batch_size], y[lo : lo + batch_size]
        for key, loss in objectives.items():
            grad = _input_gradients(model, xb, yb, loss).reshape(len(xb), -1)
            counts[key] += int((grad == 0).all(axis=1).sum())
    flagged = any(counts.values())
    message = (
        f"{counts['ce']} CE and {counts['dlr']} DLR input gradients of {len(x)} "
        "points are exactly zero"
        + (" (gradient masking: saturated softmax or non-differentiable ops)" if flagged else "")
    )
    evidence = {"n": int(len(x)), "zero_ce": counts["ce"], "zero_dlr": counts["dlr"]}
    return Check.decided("zero_gradients", flagged, message, evidence)


def randomness_check(model: Callable, x: np.ndarray, passes: int = 3) -> Check:
    """Flags a model whose inference-mode outputs change between passes.

    Compares L2-normalized logits of `passes` forward passes on the same
    batch (as AutoAttack does); a randomized defense needs EoT attacks.
    """
    runs = []
    for _ in range(passes):
        z = np.asarray(tf.cast(model(x, training=False), tf.float32))
        runs.append(z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12))
    diff = max(float(np.abs(r - runs[0]).max()) for r in runs[1:])
    flagged = diff > RANDOMNESS_TOLERANCE
    message = (
        f"max difference of normalized logits over {passes} passes: {diff:.3g}"
        + (" (randomized forward pass: use EoT)" if flagged else "")
    )
    return Check.decided("randomness", flagged, message, {"passes": passes, "max_difference": diff})


def softmax_output_check(logits: np.ndarray) -> Check:
    """Flags outputs that look like probabilities (rows in [0, 1] summing to 1)."""
    in_range = bool(((logits >= 0) & (logits <= 1)).all())
    row_error = float(np.abs(logits.sum(axis=1) - 1.0).max())
    flagged = in_range and row_error <= SOFTMAX_TOLERANCE
    message = (
        "outputs are probabilities, not logits: attack the logits" if flagged
        else "outputs are not softmax probabilities"
    )
    return Check.decided(
        "softmax_output", flagged, message,
        {"in_unit_interval": in_range, "max_row_sum_error": row_error},
    )


def black_box_check(attacks: Sequence[AttackResult], n: int) -> Check:
    """Flags black-box attacks that break points the white-box ones missed.

    AutoAttack's rule for Square, applied to every gradient-free or transfer
    attack that runs after at least one white-box attack: flagged when it
    lowers the robust accuracy by more than 0.2 percentage points. Not run
    when no such attack ran, or none had a point left to attack.

    Args:
        attacks: Ensemble results, in run order.
        n: Number of evaluated points.
    """
    name = "black_box_beats_white_box"
    extra = {}
    seen_white_box = False
    for r in attacks:
        if r.kind == "white-box":
            seen_white_box = True
        elif seen_white_box and r.n_attacked:
            extra[r.name] = r.n_broken / n
    if not extra:
        ran = [r.name for r in attacks if r.kind != "white-box"]
        reason = (
            "no black-box or transfer attack ran after a white-box attack" if not ran
            else f"{', '.join(ran)} had no point left to attack after the white-box attacks"
        )
        return not_run(name, reason, {"extra_broken_fraction": {}})
    worst = max(extra.values())
    flagged = worst > BLACK_BOX_MARGIN
    message = (
        f"black-box attacks lowered the white-box robust accuracy by up to {100 * worst:.2f} pp"
        + (" (> 0.2 pp: likely gradient masking; run adaptive attacks)" if flagged else "")
    )
    return Check.decided(name, flagged, message, {"extra_broken_fraction": extra})


def eps_curve_check(points: Sequence[dict], n: int, predicted_classes: int) -> Check:
    """Accuracy must not rise with eps and must reach zero at the largest eps.

    The largest eps must reach every image of the box (1 for L-inf, `sqrt(d)`
    for L2): there any point can be moved onto an image that the model
    assigns another class, so the true accuracy is zero for any model that
    predicts at least two classes. Above `TOP_RADIUS_TOLERANCE` (1 %, at least
    one point) the attack failed where it cannot fail: a masking symptom.
    Not run for a model that predicts one class on every clean point.

    Args:
        points: `[{"eps": e, "accuracy": a}, ...]` sorted by eps.
        n: Number of evaluated points.
        predicted_classes: Number of distinct classes the model predicts on
            the clean points.
    """
    name = "accuracy_vs_eps"
    if predicted_classes < 2:
        return not_run(name, "the model predicts a single class, so zero accuracy is not reachable")
    acc = [p["accuracy"] for p in points]
    rises = [
        (points[i]["eps"], points[i + 1]["eps"])
        for i in range(len(acc) - 1)
        if acc[i + 1] > acc[i] + CURVE_TOLERANCE
    ]
    final = acc[-1]
    tolerance = max(TOP_RADIUS_TOLERANCE, 1.0 / n)
    problems = []
    if rises:
        problems.append(f"accuracy rises between eps {rises}")
    if final > tolerance:
        problems.append(
            f"accuracy {100 * final:.2f} % at eps {points[-1]['eps']:g}, where every image is "
            f"reachable, is above {100 * tolerance:.2f} % (the attack fails where it cannot)"
        )
    message = "; ".join(problems) or "accuracy falls with eps and reaches zero"
    return Check.decided(
        name, bool(problems), message,
        {"rises": rises, "final_accuracy": final, "tolerance": tolerance},
    )


def steps_curve_check(points: Sequence[dict], n: int) -> Check:
    """The attack must have converged: accuracy no longer falls at the last step counts.

    The curve's runs share their random start and step size, so the iterates
    of a shorter run are a prefix of a longer one's and, for a deterministic
    model, accuracy can only fall; the change between two step counts is
    then exactly the number of points the extra steps broke. Flagged when
    the accuracy still falls between the last two step counts by more than
    noise (one-sided sign test, `beyond_noise`: at least 5 points), or when
    it rises between any two (possible only for a randomized model).

    Args:
        points: `[{"steps": k, "accuracy": a}, ...]` sorted by steps.
        n: Number of evaluated points.
    """
    name = "accuracy_vs_steps"
    if len(points) < 2:
        return not_run(name, "the curve has fewer than two step counts")
    changes = [round((b["accuracy"] - a["accuracy"]) * n) for a, b in zip(points, points[1:])]
    rises = [p["steps"] for p, c in zip(points[1:], changes) if beyond_noise(c)]
    still_falling = beyond_noise(-changes[-1])
    problems = []
    if rises:
        problems.append(f"more steps raised accuracy at steps {rises}")
    if still_falling:
        problems.append(
            f"still falling at {points[-1]['steps']} steps: {-changes[-1]} more points broken than "
            f"at {points[-2]['steps']} (the attack has not converged; use more steps)"
        )
    message = "; ".join(problems) or (
        f"converged: the accuracy changes by {abs(changes[-1])} points between "
        f"{points[-2]['steps']} and {points[-1]['steps']} steps"
    )
    return Check.decided(
        name, bool(problems), message,
        {"rises_at_steps": rises, "converged": not still_falling, "changes": changes},
    )


def single_step_check(attacks: Sequence[AttackResult], single: str, iterative: str) -> Check:
    """Flags a single-step attack that beats an iterative one.

    Args:
        attacks: Ensemble results with standalone accuracies.
        single: Name of the single-step attack (FGSM).
        iterative: Name of the iterative attack (PGD).

    Returns:
        A `Check`, not run if either attack has no standalone accuracy.
    """
    name = "single_step_beats_iterative"
    by_name = {r.name: r.accuracy for r in attacks}
    a_single, a_iter = by_name.get(single), by_name.get(iterative)
    if a_single is None or a_iter is None:
        return not_run(name, f"{single} and {iterative} did not both run standalone")
    flagged = a_single < a_iter - CURVE_TOLERANCE
    message = (
        f"{single} accuracy {a_single:.3f} vs {iterative} {a_iter:.3f}"
        + (" (single-step beats iterative: gradient masking or a weak PGD)" if flagged else "")
    )
    return Check.decided(name, flagged, message, {single: a_single, iterative: a_iter})
