"""Experiment 2 — HE paper Table 3 pattern: FastAT and FreeAT, plain / +HE / +m-HE, with training time.

FastAT: one FGSM step of 1.25 eps from a uniform start, with the
catastrophic-overfitting early stop. FreeAT: 4 replays, the epoch budget
divided by the replays. Evaluated clean, under PGD-50 (the paper's attack)
and APGD-DLR (scale-invariant); the wall-clock training time is measured on
this machine (shared CPU: compare within a column, not across machines).

Run: `python experiments/exp2_table3.py [--dataset mnist5k --model trades_cnn]`.
"""

from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common as C  # noqa: E402

NAME = "exp2_table3"
HEADS = ("linear", "he", "mhe")
EPOCHS, N_TRAIN, N_EVAL, REPLAYS = 10, 0, 360, 4
PGD50 = "PGD-50"
ATTACKS = (PGD50, C.APGD_DLR)


def specs(sz, args, seed):
    """FastAT and FreeAT at their frameworks' own step and BN defaults (None in the config)."""
    fast = dict(framework="fastat", steps=1, callbacks=["fastat_early_stop"])
    free = dict(framework="freeat", steps=1, framework_params={"replays": REPLAYS},
                epochs=max(1, math.ceil(sz["epochs"] / REPLAYS)))
    for fw, kw in (("FastAT", fast), ("FreeAT", free)):
        for head in HEADS:
            yield fw, head, C.base_spec(sz, args, head=head, seed=seed, **kw)


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "digits", "small_cnn", argv)
    sz = C.sizes(args, EPOCHS, N_TRAIN, N_EVAL)
    log = C.logger(NAME)
    # Toy run: the code paths of both frameworks and of an HE head.
    quick = {("FastAT", "linear"), ("FastAT", "he"), ("FreeAT", "linear")}

    def runs_of_seed(seed: int) -> list:
        return [C.train_and_eval(spec, args, sz, ATTACKS, log, group=f"{fw}/{head}",
                                 extra={"framework": fw, "head": head})
                for fw, head, spec in specs(sz, args, seed) if not args.quick or (fw, head) in quick]

    return C.run_grid(NAME, args, sz, runs_of_seed, lambda p, path: figure(p["summary"], path), log,
                      {"epochs_note": f"FreeAT trains ceil(epochs / {REPLAYS}) passes x {REPLAYS} replays"})


def figure(summary: dict, path: str) -> None:
    plt = C.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    groups = [g for g in summary if "metrics" not in summary[g]]
    for ax, metric in zip(axes, (PGD50, "steady_train_seconds")):
        vals = [summary[g].get(metric, {}) for g in groups]
        means = [(v.get("mean") or 0) * (100 if metric != "steady_train_seconds" else 1) for v in vals]
        stds = [(v.get("std") or 0) * (100 if metric != "steady_train_seconds" else 1) for v in vals]
        ax.bar(np.arange(len(groups)), means, yerr=stds, capsize=3,
               color=["C0", "C1", "C2"] * 2)
        ax.set_xticks(np.arange(len(groups)))
        ax.set_xticklabels(groups, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("PGD-50 accuracy (%)" if metric != "steady_train_seconds" else "training time (s)")
        ax.grid(axis="y", alpha=0.3)
    C.savefig(fig, path)


if __name__ == "__main__":
    main()
