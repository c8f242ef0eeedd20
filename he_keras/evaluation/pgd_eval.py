"""The evaluation's PGD: one attack rule and the clean / PGD accuracy it gives.

`evaluation_pgd` is the PGD every evaluation runs (cross-entropy from a
uniform random start, the per-point best iterate); `pgd_accuracy` runs it
through the evaluation path (`ensemble.run_ensemble`: clean-correct points
only, every output re-checked in the threat model), batch by batch. The final evaluation of
a training run (`he_keras.runs`) and the suite's curves use them.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from he_keras.attacks import core
from he_keras.evaluation.ensemble import SuiteAttack, run_ensemble


def evaluation_pgd(eps: float, steps: int, step_size: float, norm: str, seed: int) -> core.ProjectedGradientAttack:
    """The evaluation's PGD: CE from a uniform random start, per-point best iterate.

    Args:
        eps: Radius.
        steps: Iterations.
        step_size: Step per iteration (`he_keras.defaults.pgd_step_size`).
        norm: `"linf"` or `"l2"`.
        seed: Seed of the random start.

    Returns:
        The attack.
    """
    return core.ProjectedGradientAttack(
        eps=eps, step_size=step_size, steps=steps, norm=norm,
        random_start="uniform", keep_best=True, seed=seed,
    )


def pgd_accuracy(
    model: Callable,
    batches: Iterable[tuple],
    eps: float,
    steps: int,
    step_size: float,
    norm: str = "linf",
    seed: int = 0,
) -> dict:
    """Clean and PGD accuracy through `run_ensemble`, streamed batch by batch.

    Each batch is evaluated by `run_ensemble` (clean-correct points only,
    every output re-checked in the threat model) and only the counts are
    kept, so memory does not grow with the number of points.

    Args:
        model: Callable `model(x, training=False) -> logits`.
        batches: Iterable of `(images, labels)`: images in [0, 1], integer
            labels (e.g. `[(x, y)]`, or a split's batches as NumPy).
        eps: Radius.
        steps: PGD iterations.
        step_size: PGD step.
        norm: `"linf"` or `"l2"`.
        seed: Seed of the random start.

    Returns:
        `{"n_examples", "clean_accuracy", "robust_accuracy", "attack"}`, the
        attack as its `config()` with its name.

    Raises:
        ValueError: if `batches` holds no example.

    Example:

    ```python
    pgd_accuracy(model, [(x, y)], eps=0.3, steps=20, step_size=0.0375)["robust_accuracy"]
    ```
    """
    pgd = evaluation_pgd(eps, steps, step_size, norm, seed)
    name = f"PGD-{steps}"
    attacks = [SuiteAttack(name, pgd, pgd.config())]
    n = clean = robust = 0
    for x, y in batches:
        result = run_ensemble(model, np.asarray(x), np.asarray(y), attacks, eps, norm, len(x))
        n += result.n
        clean += int(result.clean_correct.sum())
        robust += int(result.robust.sum())
    if n == 0:
        raise ValueError("No example to evaluate (0 test examples)")
    return {
        "n_examples": n,
        "clean_accuracy": clean / n,
        "robust_accuracy": robust / n,
        "attack": {**pgd.config(), "name": name},
    }
