"""Experiment 7 — seed 003: class-wise robustness, and HE vs HE-LIS vs HE-CMP under Temperature-PGD.

Part A (their Sec. 3): for PGD-AT and PGD-AT+HE (the models of experiment 1)
the per-class accuracy under PGD-20 and under the worst case of PGD-20 and
Temperature-PGD, the robustness confusion matrix (true class x class
predicted on the worst-case input), and the Spearman correlation between the
per-class norm of the classifier weights and per-class robustness.

Part B (their Table 6): PGD-AT (Madry), PGD-AT+HE, HE-LIS and HE-CMP (HE head
with a scale schedule, no margin, as in their Appendix G) under PGD-20 (1/T =
1) and Temperature-PGD with 1/T in TEMPERATURES.

Run: `python experiments/exp7_classwise.py [--dataset cifar10 --model wide_resnet]`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common as C  # noqa: E402
import exp1_table2 as E1  # noqa: E402

NAME = "exp7_classwise"
TEMPERATURES = (5.0, 10.0, 50.0)
DEFENSES = {
    "PGD-AT": dict(head="linear"),
    "PGD-AT+HE": dict(head="he"),
    "HE-LIS": dict(head="he", m=0.0, callbacks=["he_lis"]),
    "HE-CMP": dict(head="he", m=0.0, callbacks=["he_cmp"]),
}
QUICK = ("PGD-AT", "HE-LIS")  # toy run: a cached model of experiment 1 and a scale schedule
CLASSWISE = E1.CLASSWISE + ("probability_variance",)


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "mnist5k", "trades_cnn", argv)
    # The sizes of experiment 1, so that its PGD-AT models are reused.
    sz = C.sizes(args, E1.EPOCHS, E1.N_TRAIN, E1.N_EVAL, batch_size=E1.BATCH)
    log = C.logger(NAME)
    temperatures = TEMPERATURES[-1:] if args.quick else TEMPERATURES
    extras = [C.temperature_pgd(t) for t in temperatures]

    def runs_of_seed(seed: int) -> list:
        runs = []
        for name, kw in DEFENSES.items():
            if args.quick and name not in QUICK:
                continue
            spec = E1.model_spec(sz, args, "pgdat", kw["head"], seed)
            spec.update(kw)
            r = C.train_and_eval(spec, args, sz, (C.PGD20,), log, group=name, classwise=True,
                                 extras=extras)
            cw = r["classwise"] = {k: r["classwise"][k] for k in CLASSWISE}
            rho = (cw["weight_norm_vs_robustness"] or {}).get("worst_case")
            r["metrics"]["worst_case"] = r["metrics"]["worst_case_all"]
            r["metrics"]["spearman_weight_norm_vs_robustness"] = rho["rho"] if rho else None
            runs.append(r)
        return runs

    return C.run_grid(NAME, args, sz, runs_of_seed,
                      lambda p, path: figure(p["summary"], p["classwise"], path), log,
                      lambda runs, summary: {"temperatures": list(TEMPERATURES),
                                             "classwise": classwise_summary(runs)})


def classwise_summary(runs) -> dict:
    """Per defense: per-class accuracy mean over seeds, summed confusion matrix."""
    out = {}
    for group in dict.fromkeys(r["group"] for r in runs):
        rs = [r for r in runs if r["group"] == group and "classwise" in r]
        if not rs:
            continue
        per = {}
        for key, getter in (("clean", lambda c: c["clean"]["accuracy"]),
                            ("pgd20", lambda c: c["attacks"][C.PGD20]["accuracy"]),
                            ("worst_case", lambda c: c["worst_case"]["accuracy"])):
            arr = np.array([[np.nan if a is None else a for a in getter(r["classwise"])] for r in rs])
            per[key] = {"mean": np.nanmean(arr, 0).tolist(), "std": np.nanstd(arr, 0).tolist()}
        wc = np.array(per["worst_case"]["mean"])
        per["ranking_weakest_first"] = [int(i) for i in np.argsort(wc)]
        per["gap_max_minus_min"] = float(np.nanmax(wc) - np.nanmin(wc))
        per["confusion_matrix"] = np.sum([r["classwise"]["confusion_matrix"] for r in rs], 0).tolist()
        norms = [r["classwise"]["weight_norms"] for r in rs if r["classwise"]["weight_norms"]]
        per["weight_norms_mean"] = np.mean(norms, 0).tolist() if norms else None
        out[group] = per
    return out


def figure(summary: dict, classes: dict, path: str) -> None:
    plt = C.pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    ax = axes[0]
    for i, (group, color) in enumerate((("PGD-AT", "C0"), ("PGD-AT+HE", "C3"))):
        if group in classes:
            v = classes[group]["worst_case"]
            ax.bar(np.arange(10) + (i - 0.5) * 0.4, 100 * np.array(v["mean"]), 0.4,
                   yerr=100 * np.array(v["std"]), capsize=2, color=color, label=group)
    ax.set_xticks(range(10))
    ax.set_xlabel("class (digit)")
    ax.set_ylabel("worst-case robust accuracy (%)")
    ax.set_title("class-wise robustness")
    ax.legend(fontsize=8)
    for ax, group in zip(axes[1:3], ("PGD-AT", "PGD-AT+HE")):
        if group in classes:
            m = np.array(classes[group]["confusion_matrix"], float)
            m = m / np.maximum(m.sum(1, keepdims=True), 1)
            im = ax.imshow(100 * m, cmap="viridis", vmin=0, vmax=100)
            ax.set_title(f"robustness confusion: {group}", fontsize=9)
            ax.set_xlabel("predicted on x*")
            ax.set_ylabel("true class")
            ax.set_xticks(range(10))
            ax.set_yticks(range(10))
            fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[3]
    inv_t = [1.0] + list(TEMPERATURES)
    for group in summary:
        vals = [summary[group].get(C.PGD20 if t == 1 else f"{C.TEMPERATURE} 1/T={t:g}", {})
                for t in inv_t]
        ax.errorbar(inv_t, [100 * v["mean"] if v.get("mean") is not None else np.nan for v in vals],
                    yerr=[100 * (v.get("std") or 0) for v in vals], marker="o", capsize=2,
                    label=group)
    ax.set_xscale("log")
    ax.set_xlabel("1/T of Temperature-PGD-20 (1 = PGD-20)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Table 6 pattern")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    C.savefig(fig, path)


if __name__ == "__main__":
    main()
