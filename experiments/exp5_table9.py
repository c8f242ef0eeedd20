"""Experiment 5 — HE paper Table 9: TRADES+HE over the scale s and the margin m.

s in {1, 5, 10, 15, 20} at m = 0.2 and m in {0, 0.1, ..., 0.5} at s = 15.
Evaluated clean, under PGD-20 (CE on the logits: the paper's attack) and
APGD-DLR (scale-invariant: a larger s cannot inflate it by flattening the
softmax of the attack).

Run: `python experiments/exp5_table9.py [--dataset cifar10 --model wide_resnet]`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common as C  # noqa: E402

NAME = "exp5_table9"
S_GRID = (1.0, 5.0, 10.0, 15.0, 20.0)  # the paper's grid (Table 9)
M_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
EPOCHS, N_TRAIN, N_EVAL, STEPS = 8, 0, 360, 3
ATTACKS = (C.PGD20, C.APGD_DLR)


def grid(quick: bool):
    points = [(s, 0.2) for s in S_GRID] + [(15.0, m) for m in M_GRID if m != 0.2]
    return points[:1] if quick else points


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "digits", "small_cnn", argv)
    sz = C.sizes(args, EPOCHS, N_TRAIN, N_EVAL)
    log = C.logger(NAME)

    def runs_of_seed(seed: int) -> list:
        return [C.train_and_eval(
            C.base_spec(sz, args, framework="trades", head="he", s=s, m=m, seed=seed,
                        steps=STEPS, framework_params={"beta": 6.0}),
            args, sz, ATTACKS, log, group=f"s={s:g}/m={m:g}", extra={"s": s, "m": m})
            for s, m in grid(args.quick)]

    return C.run_grid(NAME, args, sz, runs_of_seed, lambda p, path: figure(p["summary"], path), log,
                      {"train_steps": STEPS})


def figure(summary: dict, path: str) -> None:
    plt = C.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, (label, keys, xs) in zip(axes, (
            ("scale s (m = 0.2)", [f"s={s:g}/m=0.2" for s in S_GRID], S_GRID),
            ("margin m (s = 15)", [f"s=15/m={m:g}" for m in M_GRID], M_GRID))):
        for metric, color in (("clean", "C2"), (C.PGD20, "C0"), (C.APGD_DLR, "C3")):
            vals = [summary.get(k, {}).get(metric, {}) for k in keys]
            ax.errorbar(xs, [100 * v["mean"] if v.get("mean") is not None else np.nan for v in vals],
                        yerr=[100 * (v.get("std") or 0) for v in vals], marker="o", capsize=2,
                        color=color, label=metric)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=8)
    C.savefig(fig, path)


if __name__ == "__main__":
    main()
