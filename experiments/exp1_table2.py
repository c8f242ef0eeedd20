"""Experiment 1 — HE paper Table 2 pattern: PGD-AT / ALP / TRADES, plain vs +HE vs +m-HE.

Each model is evaluated clean and under PGD-20 (CE on the logits), PGD-20 on
the raw cosines (logits / s), APGD-CE and APGD-DLR (reported separately),
CW-Linf, the HE-adaptive PGD (the HE training loss with s and m), the
Temperature-PGD of seed 003 and AutoAttack-standard: the presets of
`he_keras.evaluation` plus the raw-cosine PGD-20 and APGD-DLR (`C.EXTRAS`). The question: does
HE's gain under CE-PGD survive the scale-invariant attacks (DLR,
Temperature-PGD, AutoAttack)?

Run: `python experiments/exp1_table2.py [--dataset cifar10 --model wide_resnet ...]`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common as C  # noqa: E402

NAME = "exp1_table2"
FRAMEWORKS = ("pgdat", "alp", "trades")
HEADS = ("linear", "he", "mhe")
# Framework hyperparameters of the HE paper (Sec. 4): TRADES 1/lambda = 6,
# ALP pairing weight 0.5.
PARAMS = {"pgdat": {}, "alp": {"beta": 0.5}, "trades": {"beta": 6.0}}
ATTACKS = (C.PGD20, C.PGD20_COS, C.APGD_DLR, C.CW, C.HE_ADAPTIVE, C.TEMPERATURE)
CLASSWISE = ("clean", "worst_case", "attacks", "confusion_matrix", "weight_norms",
             "weight_norm_vs_robustness")
# Default small-scale budget (mnist5k, trades_cnn, 2 CPU cores).
# Batch 32: twice the updates of batch 64 for the same compute (the runs are
# short, so the number of updates matters more than the CPU efficiency).
EPOCHS, N_TRAIN, N_EVAL, STEPS, BATCH = 2, 2000, 150, 3, 32


def model_spec(sz: dict, args, framework: str, head: str, seed: int, steps: int = STEPS) -> dict:
    """The training spec shared with experiments 7 and 8."""
    return C.base_spec(sz, args, framework=framework, head=head, seed=seed, steps=steps,
                       framework_params=dict(PARAMS[framework]))


def pairs(quick: bool) -> list:
    if quick:  # toy run: plain and HE (experiment 8 trains the TRADES model)
        return [("pgdat", "linear"), ("pgdat", "he")]
    return [(f, h) for f in FRAMEWORKS for h in HEADS]


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "mnist5k", "trades_cnn", argv)
    sz = C.sizes(args, EPOCHS, N_TRAIN, N_EVAL, batch_size=BATCH)
    log = C.logger(NAME)
    frameworks = list(dict.fromkeys(f for f, _ in pairs(args.quick)))

    def runs_of_seed(seed: int) -> list:
        runs = []
        for framework, head in pairs(args.quick):
            r = C.train_and_eval(model_spec(sz, args, framework, head, seed), args, sz, ATTACKS, log,
                                 group=f"{framework}/{head}", autoattack=True, classwise=True,
                                 extra={"framework": framework, "head": head})
            r["classwise"] = {k: r["classwise"][k] for k in CLASSWISE}
            runs.append(r)
        return runs

    return C.run_grid(NAME, args, sz, runs_of_seed,
                      lambda p, path: figure(p["summary"], frameworks, path), log,
                      {"attacks": list(ATTACKS), "train_steps": STEPS})


def figure(summary: dict, frameworks, path: str) -> None:
    plt = C.pyplot()
    cols = ["clean", C.PGD20, C.PGD20_COS, C.APGD_CE, C.APGD_DLR, C.CW, C.HE_ADAPTIVE,
            C.TEMPERATURE, C.AUTOATTACK]
    fig, axes = plt.subplots(1, len(frameworks), figsize=(5.2 * len(frameworks), 3.8), sharey=True)
    axes = np.atleast_1d(axes)
    width = 0.27
    for ax, fw in zip(axes, frameworks):
        for i, head in enumerate(HEADS):
            row = summary.get(f"{fw}/{head}", {})
            means = [100 * (row.get(c, {}).get("mean") or 0.0) for c in cols]
            stds = [100 * (row.get(c, {}).get("std") or 0.0) for c in cols]
            ax.bar(np.arange(len(cols)) + (i - 1) * width, means, width, yerr=stds,
                   label={"linear": "plain", "he": "+HE", "mhe": "+m-HE"}[head], capsize=2)
        ax.set_xticks(np.arange(len(cols)))
        ax.set_xticklabels(cols, rotation=60, ha="right", fontsize=7)
        ax.set_title(fw.upper() if fw != "pgdat" else "PGD-AT")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=8)
    C.savefig(fig, path)


if __name__ == "__main__":
    main()
