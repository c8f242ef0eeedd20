"""Experiment 4 — HE paper Figure 2 (left): PGD-AT vs PGD-AT+HE trained with K = 1..7 PGD steps.

Each model is trained with a K-step PGD (step `pgd_step_size` = 2.5 eps / K,
uniform start)
and evaluated under PGD-20 (CE on the logits) and AutoAttack. The paper's
claim: HE needs fewer training steps for the same PGD-20 robustness
("3-step PGD-AT+HE is more robust than 7-step PGD-AT").

Run: `python experiments/exp4_figure2.py [--dataset mnist5k --model trades_cnn]`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common as C  # noqa: E402

NAME = "exp4_figure2"
HEADS = ("linear", "he")
STEPS = (1, 2, 3, 4, 5, 6, 7)
EPOCHS, N_TRAIN, N_EVAL = 8, 0, 360
ATTACKS = (C.PGD20,)


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "digits", "small_cnn", argv)
    sz = C.sizes(args, EPOCHS, N_TRAIN, N_EVAL)
    log = C.logger(NAME)
    steps = (2,) if args.quick else STEPS

    def runs_of_seed(seed: int) -> list:
        # Toy run: AutoAttack's path is exercised by experiment 1.
        return [C.train_and_eval(C.base_spec(sz, args, head=head, seed=seed, steps=k), args, sz,
                                 ATTACKS, log, group=f"{head}/K={k}", autoattack=not args.quick,
                                 extra={"head": head, "K": k})
                for k in steps for head in HEADS]

    return C.run_grid(NAME, args, sz, runs_of_seed,
                      lambda p, path: figure(p["summary"], steps, path), log, {"steps": list(steps)})


def figure(summary: dict, steps, path: str) -> None:
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for head, color in (("linear", "C0"), ("he", "C3")):
        for metric, style in ((C.PGD20, "-"), (C.AUTOATTACK, "--")):
            vals = [summary.get(f"{head}/K={k}", {}).get(metric, {}) for k in steps]
            if not any(v.get("mean") is not None for v in vals):
                continue
            ax.errorbar(steps, [100 * (v.get("mean") or np.nan) for v in vals],
                        yerr=[100 * (v.get("std") or 0) for v in vals], color=color, ls=style,
                        marker="o", capsize=2,
                        label=f"PGD-AT{'+HE' if head == 'he' else ''}, {metric}")
    ax.set_xlabel("PGD steps K in training")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    C.savefig(fig, path)


if __name__ == "__main__":
    main()
