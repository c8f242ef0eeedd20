"""Automatic gradient-masking checks: each returns a flag with its evidence.

They mirror AutoAttack's checks (zero gradients, randomness, softmax output,
Square beating the white-box attacks by more than 0.2 pp) and the sanity
tests of Carlini et al. (2019) / Athalye et al. (2018): accuracy must fall as
eps grows and reach about chance level at large eps, more attack iterations
must not help the model, and a single-step attack must not beat an iterative
one. A flag is evidence to look at, not a verdict.
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
SOFTMAX_TOLERANCE = 1e-5
RANDOMNESS_TOLERANCE = 1e-4


@dataclasses.dataclass
class Check:
    """The outcome of one check.

    Attributes:
        name: Identifier, e.g. `"zero_gradients"`.
        flagged: True if the check found a symptom of gradient masking or
            of a broken evaluation.
        message: One sentence for humans.
        evidence: The numbers behind the decision.
    """

    name: str
    flagged: bool
    message: str
    evidence: dict

    def to_json(self) -> dict:
        """The JSON-ready record."""
        return dataclasses.asdict(self)


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
    return Check("zero_gradients", flagged, message, evidence)


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
    return Check("randomness", flagged, message, {"passes": passes, "max_difference": diff})


def softmax_output_check(logits: np.ndarray) -> Check:
    """Flags outputs that look like probabilities (rows in [0, 1] summing to 1)."""
    in_range = bool(((logits >= 0) & (logits <= 1)).all())
    row_error = float(np.abs(logits.sum(axis=1) - 1.0).max())
    flagged = in_range and row_error <= SOFTMAX_TOLERANCE
    message = (
        "outputs are probabilities, not logits: attack the logits" if flagged
        else "outputs are not softmax probabilities"
    )
    return Check(
        "softmax_output", flagged, message,
        {"in_unit_interval": in_range, "max_row_sum_error": row_error},
    )


def black_box_check(attacks: Sequence[AttackResult], n: int) -> Check:
    """Flags black-box attacks that break points the white-box ones missed.

    AutoAttack's rule for Square, applied to every gradient-free or transfer
    attack that runs after at least one white-box attack: flagged when it
    lowers the robust accuracy by more than 0.2 percentage points.

    Args:
        attacks: Ensemble results, in run order.
        n: Number of evaluated points.
    """
    extra = {}
    seen_white_box = False
    for r in attacks:
        if r.kind == "white-box":
            seen_white_box = True
        elif seen_white_box and r.n_broken:
            extra[r.name] = r.n_broken / n
    worst = max(extra.values(), default=0.0)
    flagged = worst > BLACK_BOX_MARGIN
    message = (
        f"black-box attacks lowered the white-box robust accuracy by up to {100 * worst:.2f} pp"
        + (" (> 0.2 pp: likely gradient masking; run adaptive attacks)" if flagged else "")
    )
    return Check("black_box_beats_white_box", flagged, message, {"extra_broken_fraction": extra})


def eps_curve_check(points: Sequence[dict], num_classes: int) -> Check:
    """Accuracy must not rise with eps and must reach chance at the largest eps.

    Args:
        points: `[{"eps": e, "accuracy": a}, ...]` sorted by eps; the largest
            eps should make every image reachable (1.0 for L-inf).
        num_classes: Number of classes (chance level is `1/num_classes`).
    """
    acc = [p["accuracy"] for p in points]
    rises = [
        (points[i]["eps"], points[i + 1]["eps"])
        for i in range(len(acc) - 1)
        if acc[i + 1] > acc[i] + CURVE_TOLERANCE
    ]
    final = acc[-1]
    chance = 1.0 / num_classes
    flagged = bool(rises) or final > chance
    problems = []
    if rises:
        problems.append(f"accuracy rises between eps {rises}")
    if final > chance:
        problems.append(
            f"accuracy {final:.3f} at eps {points[-1]['eps']:g} is above chance {chance:.3f}"
        )
    message = "; ".join(problems) or "accuracy falls with eps and reaches chance level"
    return Check(
        "accuracy_vs_eps", flagged, message,
        {"rises": rises, "final_accuracy": final, "chance": chance},
    )


def steps_curve_check(points: Sequence[dict]) -> Check:
    """More PGD steps must not raise accuracy.

    Args:
        points: `[{"steps": k, "accuracy": a}, ...]` sorted by steps.
    """
    rises = []
    best = points[0]["accuracy"]
    for p in points[1:]:
        if p["accuracy"] > best + CURVE_TOLERANCE:
            rises.append(p["steps"])
        best = min(best, p["accuracy"])
    converged = abs(points[-1]["accuracy"] - points[-2]["accuracy"]) <= CURVE_TOLERANCE
    message = (
        f"more steps raised accuracy at steps {rises}" if rises
        else "accuracy does not rise with more steps"
    ) + ("" if converged else "; not converged at the largest step count")
    return Check(
        "accuracy_vs_steps", bool(rises), message,
        {"rises_at_steps": rises, "converged": converged},
    )


def single_step_check(attacks: Sequence[AttackResult], single: str, iterative: str) -> Optional[Check]:
    """Flags a single-step attack that beats an iterative one.

    Args:
        attacks: Ensemble results with standalone accuracies.
        single: Name of the single-step attack (FGSM).
        iterative: Name of the iterative attack (PGD).

    Returns:
        A `Check`, or None if either attack has no standalone accuracy.
    """
    by_name = {r.name: r.accuracy for r in attacks}
    a_single, a_iter = by_name.get(single), by_name.get(iterative)
    if a_single is None or a_iter is None:
        return None
    flagged = a_single < a_iter - CURVE_TOLERANCE
    message = (
        f"{single} accuracy {a_single:.3f} vs {iterative} {a_iter:.3f}"
        + (" (single-step beats iterative: gradient masking or a weak PGD)" if flagged else "")
    )
    return Check(
        "single_step_beats_iterative", flagged, message,
        {single: a_single, iterative: a_iter},
    )
