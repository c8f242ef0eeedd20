"""The evaluation protocol of a unit: which attacks, in which order, with which seeds.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from he_keras.attacks import adaptive, apgd, core
from he_keras.attacks.core import ProjectedGradientAttack
from he_keras.defaults import EVAL_PGD_STEPS, pgd_step_size, probe_step_size
from he_keras.evaluation import SuiteAttack, run_ensemble
from he_keras.evaluation import points as points_lib
from he_keras.evaluation.raw_output import OnFeatureNormalized, OnRawOutput
from he_keras.evaluation.presets import autoattack_standard

from experiments.arms import Arm, QUICK_AA_BUDGET


PGD20 = "PGD-20"
PGD20_RAW = "PGD-20 (logits/s)"
APGD_DLR = "APGD-DLR"
FGSM = "FGSM"
# HE paper Table 7 (standard model only): PGD-K from a zero start with the
# paper's step (2/255 for eps 8/255: `defaults.probe_step_size`), cross-entropy
# on the logits or on the FN logits.
FN_STEPS = (1, 2)


def fn_pair_names(steps: int) -> tuple[str, str]:
    return f"PGD-{steps} (CE)", f"PGD-{steps} (FN)"
SI_CHAIN = "scale-invariant"
SI_PARTS = ("APGD-T", "FAB-T", "Square")  # AutoAttack-standard after APGD-CE


def temperature_name(inverse_temperature: float) -> str:
    return f"Temperature-PGD 1/T={inverse_temperature:g}"


def protocol(model: Any, arm: Arm, eps: float, seed: int, num_classes: int = 10,
             quick: bool = False) -> list:
    """The attacks of one unit's evaluation, in order.

    PGD-20 on the logits (the papers' column) and, for HE heads, on
    `logits / s`; APGD-DLR (untargeted, scale-invariant); the arm's
    Temperature-PGD runs; FGSM (seed 003's weak attack); for the standard
    model, PGD-1 and PGD-2 with and without FN in the objective (HE paper
    Table 7); the AutoAttack-
    standard chain on the logits and, for HE heads, on `logits / s` (the
    suite's `autoattack_standard`; `quick`: with `QUICK_AA_BUDGET`).
    Standalone attacks added to the protocol after a unit ran are run on its
    saved model later (`supplement`).
    """
    def named(name: str, attack: Any) -> Any:
        return SuiteAttack(name, attack, attack.config())

    def pgd20(offset: int) -> Any:
        return ProjectedGradientAttack(eps, pgd_step_size(eps, EVAL_PGD_STEPS), EVAL_PGD_STEPS,
                                       keep_best=True, seed=seed + offset)

    attacks = [named(PGD20, pgd20(1))]
    if arm.head != "linear":
        attacks.append(named(PGD20_RAW, OnRawOutput(pgd20(2))))
    attacks.append(named(APGD_DLR, apgd.APGD(eps, loss="dlr", seed=seed + 3)))
    for i, inverse in enumerate(arm.temperatures):
        attacks.append(named(temperature_name(inverse), adaptive.TemperaturePGD(
            eps, pgd_step_size(eps, EVAL_PGD_STEPS), EVAL_PGD_STEPS,
            temperatures=(1.0 / inverse,), seed=seed + 10 + i)))
    attacks.append(named(FGSM, core.fgsm(eps)))
    if arm.framework == "standard":
        for steps in FN_STEPS:
            ce, fn = fn_pair_names(steps)
            step = probe_step_size(eps)
            attacks.append(named(ce, ProjectedGradientAttack(eps, step, steps, random_start="zero")))
            attacks.append(named(fn, OnFeatureNormalized(
                ProjectedGradientAttack(eps, step, steps, random_start="zero"))))
    chains, _ = autoattack_standard(eps, "linf", seed, num_classes, head=arm.head,
                                    budget=QUICK_AA_BUDGET if quick else 1.0)
    return attacks + chains


def scale_invariant(model: Any, x: Any, y: Any, eps: float, seed: int, points: dict,
                    num_classes: int = 10, quick: bool = False) -> dict:
    """Worst case of the scale-invariant attacks only (APGD-DLR, APGD-T, FAB-T, Square).

    The AutoAttack chain runs APGD-T -> FAB-T -> Square on the points APGD-CE
    left; the same chain (fresh seeds) runs here on the points APGD-CE broke,
    so every clean-correct point meets APGD-T -> FAB-T -> Square once. A point
    is robust when it survives that chain and APGD-DLR (`quick`: the chain
    with `QUICK_AA_BUDGET`, as in `protocol`).

    Returns:
        `{"flags": "0101...", "accuracy", "n_extra", "seconds"}`.
    """


    start = time.perf_counter()
    outcomes = points_lib.decode(points)
    bits, clean = outcomes["survivors"], outcomes["clean"]
    after_ce, after_chain = bits[points_lib.AUTOATTACK[0]], points_lib.chain_survivors(points)
    broken_by_ce = clean & ~after_ce
    chain, _ = autoattack_standard(eps, "linf", seed + 100, num_classes,
                                   budget=QUICK_AA_BUDGET if quick else 1.0)
    chain = [a for a in chain if a.name in SI_PARTS]
    robust = after_chain.copy()
    idx = np.flatnonzero(broken_by_ce)
    if len(idx):
        extra = run_ensemble(model, x[idx], y[idx], chain, eps, "linf", 250)
        robust[idx] = extra.robust
    robust &= bits[APGD_DLR]
    return {"flags": points_lib.encode_flags(robust), "accuracy": float(robust.mean()),
            "n_extra": int(len(idx)), "seconds": time.perf_counter() - start}
