"""The evaluation's PGD: one attack rule and the clean / PGD accuracy it gives.

`evaluation_pgd` is the PGD every evaluation runs (cross-entropy from a
uniform random start, the per-point best iterate); `pgd_accuracy` runs it
through the evaluation path (`ensemble.run_ensemble`: clean-correct points
only, every output re-checked in the threat model). The final evaluation of
a training run (`he_keras.runs`) and the suite's curves use them.
"""

from __future__ import annotations

from typing import Callable

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
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    steps: int,
    step_size: float,
    norm: str = "linf",
    seed: int = 0,
    batch_size: int = 256,
) -> dict:
    """Clean and PGD accuracy through `run_ensemble` (re-checked in the threat model).

    Args:
        model: Callable `model(x, training=False) -> logits`.
        x: Clean inputs in [0, 1], `(n, ...)`.
        y: Integer labels, `(n,)`.
        eps: Radius.
        steps: PGD iterations.
        step_size: PGD step.
        norm: `"linf"` or `"l2"`.
        seed: Seed of the random start.
        batch_size: Points per attack call.

    Returns:
        `{"n_examples", "clean_accuracy", "robust_accuracy", "attack"}`, the
        attack as its `config()` with its name.

    Example:

    ```python
    pgd_accuracy(model, x, y, eps=0.3, steps=20, step_size=0.0375)["robust_accuracy"]
    ```
    """
    pgd = evaluation_pgd(eps, steps, step_size, norm, seed)
    name = f"PGD-{steps}"
    result = run_ensemble(model, x, y, [SuiteAttack(name, pgd, pgd.config())], eps, norm, batch_size)
    return {
        "n_examples": int(len(x)),
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "attack": {**pgd.config(), "name": name},
    }
