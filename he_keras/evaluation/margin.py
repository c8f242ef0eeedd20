"""Margin along initial adversarial directions (HAT, Rade & Moosavi-Dezfooli,
ICLR 2022, Sec. 3; the project's seed 004).

A reference model (HAT: the standard model before adversarial training)
gives, by PGD with its own predictions as labels, perturbations r_0 on fixed
points. The margin of a model along r_0 is the smallest `a >= 0` such that the
model's prediction at `x + a * r_0/||r_0||_2` differs from its prediction at
`x`: a coarse search over `a = 0, 1, ..., cap` then a refinement from `a - 1`
in steps of `precision` (no clip to [0, 1], as in HAT's `exp.py`). Points
whose prediction never changes get `cap`. A random direction orthogonal to
r_0 is the control: adversarial training is claimed to inflate the margin
along r_0 much more than along random directions.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from he_keras.attacks.core import ProjectedGradientAttack
from he_keras.defaults import probe_step_size
from he_keras.evaluation.ensemble import predict_logits

PERCENTILES = (10, 50, 90)


def adversarial_directions(
    reference: Callable,
    x: np.ndarray,
    eps: float,
    steps: int = 20,
    step_size: Optional[float] = None,
    norm: str = "linf",
    seed: Optional[int] = None,
    batch_size: int = 128,
) -> np.ndarray:
    """Unit-L2 directions of the reference model's PGD perturbations.

    The labels are the reference model's own predictions (as in HAT).

    Args:
        reference: Callable returning logits.
        x: Inputs in [0, 1].
        eps: PGD radius.
        steps: PGD steps.
        step_size: PGD step (default `eps / 4`, 2/255 for 8/255 as in HAT).
        norm: `"linf"` or `"l2"`.
        seed: Seed of the random start.
        batch_size: Batch size.

    Returns:
        Directions of shape `x.shape`, unit L2 per example; all-zero rows
        where PGD did not move the point.
    """
    attack = direction_attack(eps, steps, step_size, norm, seed)
    return _directions(reference, x, attack, batch_size)


def direction_attack(
    eps: float,
    steps: int = 20,
    step_size: Optional[float] = None,
    norm: str = "linf",
    seed: Optional[int] = None,
) -> ProjectedGradientAttack:
    """The PGD whose perturbations give the directions (step `eps / 4` by default)."""
    return ProjectedGradientAttack(
        eps=eps, step_size=step_size or probe_step_size(eps), steps=steps, norm=norm, seed=seed
    )


def _directions(
    reference: Callable, x: np.ndarray, attack: ProjectedGradientAttack, batch_size: int
) -> np.ndarray:
    labels = predict_logits(reference, x, batch_size).argmax(axis=1)
    r = np.concatenate([
        np.asarray(attack(reference, x[i : i + batch_size], labels[i : i + batch_size]))
        for i in range(0, len(x), batch_size)
    ]) - x
    return _unit(r)


def _unit(r: np.ndarray) -> np.ndarray:
    flat = r.reshape(len(r), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.where(norms > 0, flat / np.maximum(norms, 1e-30), 0.0).reshape(r.shape).astype(np.float32)


def orthogonal_directions(directions: np.ndarray, seed: Optional[int] = None) -> np.ndarray:
    """Random unit-L2 directions orthogonal to each given direction."""
    rng = np.random.default_rng(seed)
    flat = directions.reshape(len(directions), -1)
    noise = rng.standard_normal(flat.shape)
    noise -= (noise * flat).sum(axis=1, keepdims=True) * flat
    return _unit(noise.reshape(directions.shape))


def margins_along(
    model: Callable,
    x: np.ndarray,
    directions: np.ndarray,
    cap: float = 35.0,
    precision: float = 0.1,
    batch_size: int = 128,
) -> np.ndarray:
    """Distance along each direction until the model's prediction changes.

    Args:
        model: Callable returning logits.
        x: Inputs.
        directions: Unit-L2 directions, same shape as `x` (zero rows give
            NaN).
        cap: Largest distance searched (L2 units); unchanged points get it.
        precision: Step of the refinement.
        batch_size: Batch size.

    Returns:
        Margins of shape `(n,)`.
    """
    if not cap >= 1.0 or not 0.0 < precision <= 1.0:
        raise ValueError(
            "`cap` must be >= 1 and `precision` in (0, 1]. "
            f"Received: cap={cap!r}, precision={precision!r}"
        )
    base = predict_logits(model, x, batch_size).argmax(axis=1)

    def changed(a: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (x.ndim - 1)
        moved = (x + a.reshape(shape) * directions).astype(np.float32)
        return predict_logits(model, moved, batch_size).argmax(axis=1) != base

    margin = np.full(len(x), float(cap))
    found = np.zeros(len(x), bool)
    for a in range(1, int(np.floor(cap)) + 1):
        hit = ~found & changed(np.full(len(x), float(a)))
        margin[hit] = a
        found |= hit
    lower = margin - 1.0
    done = ~found
    for k in range(1, int(round(1.0 / precision))):
        a = lower + k * precision
        hit = ~done & changed(a)
        margin[hit] = a[hit]
        done |= hit
    zero = ~directions.reshape(len(x), -1).any(axis=1)
    margin[zero] = np.nan
    return margin


def margin_statistics(margins: np.ndarray, cap: float) -> dict:
    """Mean, median and 10/50/90th percentiles of the finite margins."""
    finite = margins[np.isfinite(margins)]
    if not len(finite):
        return {"n": 0}
    return {
        "n": int(len(finite)),
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        **{f"p{q}": float(np.percentile(finite, q)) for q in PERCENTILES},
        "n_capped": int((finite >= cap).sum()),
    }


def margin_report(
    model: Callable,
    reference: Callable,
    x: np.ndarray,
    eps: float,
    norm: str = "linf",
    cap: float = 35.0,
    precision: float = 0.1,
    steps: int = 20,
    seed: Optional[int] = None,
    batch_size: int = 128,
) -> dict:
    """Margins of `model` along `reference`'s PGD directions and a control.

    Args:
        model: The evaluated model.
        reference: The model whose PGD perturbations give the directions.
        x: Inputs.
        eps: PGD radius of the reference perturbations.
        norm: PGD norm.
        cap: Largest distance searched.
        precision: Refinement step.
        steps: PGD steps of the reference perturbations.
        seed: Seed of PGD's random start and of the control directions.
        batch_size: Batch size.

    Returns:
        JSON-ready statistics for `adversarial` and `orthogonal` directions.
    """
    attack = direction_attack(eps, steps, norm=norm, seed=seed)
    directions = _directions(reference, x, attack, batch_size)
    control = orthogonal_directions(directions, seed)
    settings = {
        "cap": cap, "precision": precision, "seed": seed, "n": int(len(x)),
        "pgd": attack.config(),
    }
    return {
        "settings": settings,
        "adversarial": margin_statistics(
            margins_along(model, x, directions, cap, precision, batch_size), cap
        ),
        "orthogonal": margin_statistics(
            margins_along(model, x, control, cap, precision, batch_size), cap
        ),
    }
