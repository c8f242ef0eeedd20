"""One home for the defaults and rules shared across he-keras.

Layers, losses, model builders, trainers, the training config, the apps, the
evaluation suite and the experiments read these names instead of writing the
numbers again, so changing a default here changes it everywhere. Defaults
that belong to one framework (FastAT's `1.25 * eps` step, FreeAT's step =
eps, FastAT's BN in training mode) stay in that framework's constructor and
are reached by passing `None`.

This module imports nothing from he-keras (nor TensorFlow), so any module can
import it without cycles.
"""

from __future__ import annotations

import math
from typing import Optional

# Scale `s` of the HE / m-HE logits (HE paper, Table 1 and Appendix C.5).
DEFAULT_SCALE = 15.0

# Angular margin `m` per head: HE 0.2 (Table 1), m-HE 0.1 (Appendix C.5);
# a linear head has none.
DEFAULT_MARGIN = {"linear": 0.0, "he": 0.2, "mhe": 0.1}

# `TrainConfig.m` / `--m` value that selects `DEFAULT_MARGIN` of the head.
MARGIN_OF_HEAD = -1.0

# Threat-model radius (pixel units, [0, 1] images) when none is given: 0.3
# on the digit datasets (MNIST's L-inf budget since Madry et al.), 8/255 on
# natural images (the papers' CIFAR-10 and ImageNet tables).
DIGIT_DATASETS = ("digits", "mnist5k", "mnist")
DIGITS_EPS = 0.3
NATURAL_IMAGE_EPS = 8 / 255

# Steps of the evaluation PGD ("PGD-20" of the papers' tables).
EVAL_PGD_STEPS = 20

# AutoAttack-standard's iterations (Croce & Hein, 2020): APGD-CE, APGD-T and
# FAB-T run 100 steps, Square 5,000 queries.
AUTOATTACK_STEPS = 100
AUTOATTACK_QUERIES = 5000

# The second step rule, `eps / 4` (2/255 at 8/255): PGD runs that probe a
# model with a few steps rather than attack it at the suite's strength (the
# HAT paper's margin directions, the catastrophic-overfitting probe, the
# accuracy-vs-steps curve, the HE paper's FN-objective comparison).
PROBE_STEP_FRACTION = 0.25

# FastAT's catastrophic-overfitting check (`CatastrophicOverfittingStop`,
# `--callbacks=fastat_early_stop`): training stops when the probe's PGD
# accuracy falls by more than `CO_MAX_DROP` between two epochs (Wong et al.,
# 2020, whose reference code stops at a 0.2 drop), and the probe is large
# enough that a model whose robustness did not drop sets the check off with
# probability at most `CO_FALSE_ALARM` (`overfitting_probe_size`).
CO_MAX_DROP = 0.2
CO_FALSE_ALARM = 1e-3

# Step-size rule of every PGD that has no step of its own: training PGD,
# evaluation PGD (PGD-20 of the suite, of the runner's final evaluation and
# of the experiments) and the PGD-based attacks of the suite. Madry et al.'s
# rule: K steps travel 2.5 eps, enough to cross the ball from a random start.
PGD_STEP_FACTOR = 2.5


def pgd_step_size(eps: float, steps: int) -> float:
    """The step of a `steps`-step PGD of radius `eps`: `2.5 * eps / steps`.

    Args:
        eps: Radius of the threat model.
        steps: Number of PGD steps (>= 1).

    Returns:
        The step size (PGD-20 at eps 0.3: 0.0375); 1.0 at `eps = 0`, where
        the ball is a point and any positive step projects back onto it.

    Example:

    ```python
    pgd = ProjectedGradientAttack(eps=0.3, steps=20, step_size=pgd_step_size(0.3, 20))
    ```
    """
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1. Received: steps={steps!r}")
    return PGD_STEP_FACTOR * eps / steps if eps > 0 else 1.0


def default_eps(dataset: str) -> float:
    """The threat-model radius of `dataset` when none is given.

    Args:
        dataset: A dataset name (`he_keras.data.load_dataset`).

    Returns:
        `DIGITS_EPS` (0.3) for `DIGIT_DATASETS`, else `NATURAL_IMAGE_EPS` (8/255).

    Example:

    ```python
    default_eps("digits")   # 0.3
    default_eps("cifar10")  # 0.0313...
    ```
    """
    return DIGITS_EPS if dataset in DIGIT_DATASETS else NATURAL_IMAGE_EPS


def probe_step_size(eps: float) -> float:
    """The step `PROBE_STEP_FRACTION * eps` (`eps / 4`) of a probing PGD.

    Args:
        eps: Radius of the threat model.

    Returns:
        The step size (2/255 at eps 8/255).

    Example:

    ```python
    stop = CatastrophicOverfittingStop(x, y, eps=8 / 255, step_size=probe_step_size(8 / 255))
    ```
    """
    return PROBE_STEP_FRACTION * eps


def overfitting_probe_size(
    max_drop: float = CO_MAX_DROP, false_alarm: float = CO_FALSE_ALARM
) -> int:
    """Probe images the catastrophic-overfitting check needs: `ceil(2 ln(1/alpha) / t^2)`.

    The check attacks the same probe images after every epoch and fires when
    the mean of the paired per-image differences `D_i = a_i(previous) -
    a_i(current)` (`a_i` = 1 if image i survives the attack), each in
    {-1, 0, 1}, exceeds `t = max_drop`. For images drawn independently (or
    without replacement, Hoeffding 1963, Sec. 6) from the training split,
    Hoeffding's inequality for variables of range 2 bounds the chance that
    noise alone makes that mean exceed its expectation by `t`:
    `P(mean(D) - E[D] >= t) <= exp(-2 n t^2 / 2^2) = exp(-n t^2 / 2)`. So when
    the robust accuracy over the training split did not drop (`E[D] <= 0`),
    a check fires with probability at most `alpha = false_alarm` once
    `n >= 2 ln(1 / alpha) / t^2`. The bound needs no assumption on how the
    accuracies or the per-image outcomes are distributed; a run of E epochs
    makes E - 1 comparisons, so its false-alarm rate is at most
    `(E - 1) * alpha`.

    Args:
        max_drop: The drop `t` of robust accuracy (absolute) that sets the
            check off, in (0, 1].
        false_alarm: The per-check false-alarm rate `alpha`, in (0, 1).

    Returns:
        The number of probe images `n`: 346 at (0.2, 1e-3). (At 64 images,
        one training batch, the bound guarantees only exp(-64 * 0.2^2 / 2)
        = 0.28.)

    Raises:
        ValueError: if `max_drop` is not in (0, 1] or `false_alarm` not in (0, 1).

    Example:

    ```python
    overfitting_probe_size(0.2, 1e-3)  # 346
    overfitting_probe_size(0.1, 1e-3)  # 1382
    ```
    """
    if not 0.0 < float(max_drop) <= 1.0:
        raise ValueError(f"`max_drop` must lie in (0, 1]. Received: max_drop={max_drop!r}")
    if not 0.0 < float(false_alarm) < 1.0:
        raise ValueError(
            f"`false_alarm` must lie in (0, 1). Received: false_alarm={false_alarm!r}"
        )
    return math.ceil(2.0 * math.log(1.0 / false_alarm) / max_drop**2)


def margin_of(head: str, m: Optional[float] = None) -> float:
    """The margin a model with this head trains with.

    Args:
        head: `"linear"`, `"he"` or `"mhe"`.
        m: The requested margin; None or `MARGIN_OF_HEAD` (-1) selects the
            head's default.

    Returns:
        The margin.

    Raises:
        ValueError: if `m` is negative (other than -1), or positive for a
            linear head (a margin needs an HE or m-HE head).
    """
    if head not in DEFAULT_MARGIN:
        raise ValueError(f"`head` must be one of {sorted(DEFAULT_MARGIN)}. Received: head={head!r}")
    if m is None or m == MARGIN_OF_HEAD:
        return DEFAULT_MARGIN[head]
    if not (float(m) >= 0 and math.isfinite(m)):
        raise ValueError(f"`m` must be >= 0 (or -1 for the head's default). Received: m={m!r}")
    if head == "linear" and m != 0:
        raise ValueError(
            "A margin needs an HE or m-HE head (--head=he or --head=mhe). "
            f"Received: head=linear, m={m!r}"
        )
    return float(m)
