"""Experiment 6 — HE ablation: FN only, WN only, FN+WN, FN+WN+AM (PGD-AT).

All HE variants use s = 15; FN only / WN only / FN+WN have no margin, FN+WN+AM
is HE with m = 0.2. The plain PGD-AT model is the reference. Evaluated clean,
under PGD-20 (the paper's attack) and APGD-DLR.

Run: `python experiments/exp6_ablation.py [--dataset cifar10 --model wide_resnet]`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common as C  # noqa: E402

NAME = "exp6_ablation"
VARIANTS = {
    "plain": dict(head="linear"),
    "FN only": dict(head="he", weight_norm=False, m=0.0),
    "WN only": dict(head="he", feature_norm=False, m=0.0),
    "FN+WN": dict(head="he", m=0.0),
    "FN+WN+AM": dict(head="he", m=0.2),
}
EPOCHS, N_TRAIN, N_EVAL, STEPS = 8, 0, 360, 3
ATTACKS = (C.PGD20, C.APGD_DLR)
QUICK = ("plain", "FN+WN+AM")  # toy run: a linear and an HE head


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "digits", "small_cnn", argv)
    sz = C.sizes(args, EPOCHS, N_TRAIN, N_EVAL)
    log = C.logger(NAME)

    def runs_of_seed(seed: int) -> list:
        return [C.train_and_eval(C.base_spec(sz, args, seed=seed, steps=STEPS, **kw), args, sz,
                                 ATTACKS, log, group=name)
                for name, kw in VARIANTS.items() if not args.quick or name in QUICK]

    return C.run_grid(NAME, args, sz, runs_of_seed, lambda p, path: figure(p["summary"], path), log,
                      {"train_steps": STEPS})


def figure(summary: dict, path: str) -> None:
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    names = list(VARIANTS)
    for i, (metric, color) in enumerate((("clean", "C2"), (C.PGD20, "C0"), (C.APGD_DLR, "C3"))):
        vals = [summary.get(n, {}).get(metric, {}) for n in names]
        ax.bar(np.arange(len(names)) + (i - 1) * 0.27, [100 * (v.get("mean") or 0) for v in vals],
               0.27, yerr=[100 * (v.get("std") or 0) for v in vals], capsize=2, color=color,
               label=metric)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    C.savefig(fig, path)


if __name__ == "__main__":
    main()
