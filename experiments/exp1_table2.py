"""Experiment 1 — HE paper Table 2 pattern: PGD-AT / ALP / TRADES, plain vs +HE vs +m-HE.

Each model is evaluated clean and under PGD-20 (CE on the logits), PGD-20 on
the raw cosines (logits / s), APGD-CE and APGD-DLR (reported separately),
CW-Linf, the HE-adaptive PGD (the HE training loss with s and m), the
Temperature-PGD of seed 003 and AutoAttack-standard. The question: does
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
from he_keras.evaluation.classwise import classwise_report  # noqa: E402
from he_keras.evaluation.ensemble import predict_logits  # noqa: E402

NAME = "exp1_table2"
FRAMEWORKS = ("pgdat", "alp", "trades")
HEADS = ("linear", "he", "mhe")
# Framework hyperparameters of the HE paper (Sec. 4): TRADES 1/lambda = 6,
# ALP pairing weight 0.5.
PARAMS = {"pgdat": {}, "alp": {"beta": 0.5}, "trades": {"beta": 6.0}}
ATTACKS = (C.PGD20, C.PGD20_COS, C.APGD_CE, C.APGD_DLR, C.CW, C.HE_ADAPTIVE, C.TEMPERATURE)
# Default small-scale budget (mnist5k, trades_cnn, 2 CPU cores).
# Batch 32: twice the updates of batch 64 for the same compute (the runs are
# short, so the number of updates matters more than the CPU efficiency).
EPOCHS, N_TRAIN, N_EVAL, STEPS, BATCH = 2, 2000, 150, 3, 32
BUDGET = {"pgd_steps": 20, "apgd_iters": 25, "cw_steps": 20, "inverse_temperatures": (10.0, 50.0),
          "aa_apgd_iters": 25, "aa_targets": 3, "aa_fab_iters": 20, "aa_square_queries": 300}


def model_spec(sz: dict, args, framework: str, head: str, seed: int, steps: int = STEPS) -> dict:
    """The training spec shared with experiments 4, 6, 7 and 8."""
    return C.base_spec(sz, args, framework=framework, head=head, seed=seed, steps=steps,
                       framework_params=dict(PARAMS[framework]))


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "mnist5k", "trades_cnn", argv)
    sz = C.sizes(args, EPOCHS, N_TRAIN, N_EVAL, batch_size=BATCH)
    log = C.logger(NAME)
    x, y = C.test_arrays(args.dataset, sz["n_eval"])
    budget = C.attack_budget(BUDGET, args.quick)
    frameworks, heads = FRAMEWORKS, HEADS
    pairs = [(f, h) for f in frameworks for h in heads]
    if args.quick:  # toy run: the code paths of plain, HE and TRADES
        frameworks, heads = ("pgdat", "trades"), ("linear", "he")
        pairs = [("pgdat", "linear"), ("pgdat", "he"), ("trades", "linear")]
    runs = []
    for seed in C.seed_loop(sz, log):
        for framework, head in pairs:
            runs.append(run_one(args, sz, budget, framework, head, seed, x, y, log))
        path = save(args, sz, budget, frameworks, heads, runs)
    log(f"wrote {path}")
    return path


def run_one(args, sz, budget, framework, head, seed, x, y, log) -> dict:
    spec = model_spec(sz, args, framework, head, seed)
    record = {"framework": framework, "head": head, "seed": seed}
    try:
        model, info = C.train(spec, args.out, log)
    except C.MissingPiece as err:
        record["error"] = f"not run: {err} missing"
        log(record["error"])
        return record
    ev = C.evaluate(model, x, y, sz["eps"], ATTACKS, seed=seed,
                    budget={**budget, "margin": info["margin"]}, autoattack=True, log=log)
    result = ev.pop("_result")
    record.update(ev)
    record["train_seconds"] = info["train_seconds"]
    record["model_key"] = info["key"]
    cw = classwise_report(result, predict_logits(model, x, 250), 10, model)
    record["classwise"] = {k: cw[k] for k in ("clean", "worst_case", "attacks",
                                              "confusion_matrix", "weight_norms",
                                              "weight_norm_vs_robustness")}
    log(f"{framework}/{head}/{seed}: clean {ev['clean']:.3f} "
        + " ".join(f"{k}={v if isinstance(v, str) else round(v, 3)}"
                   for k, v in ev["attacks"].items())
        + f" AA={ev.get('autoattack')} ({sum(ev['seconds'].values()):.0f}s)")
    return record


def save(args, sz, budget, frameworks, heads, runs) -> str:
    summary = {}
    for framework in frameworks:
        for head in heads:
            rs = [r for r in runs if r["framework"] == framework and r["head"] == head]
            ok = [r for r in rs if "error" not in r]
            row = {"clean": C.mean_std([r["clean"] for r in ok])}
            for a in ATTACKS:
                row[a] = C.mean_std([r["attacks"].get(a) for r in ok])
            row[C.AUTOATTACK] = C.mean_std([r.get("autoattack") for r in ok])
            row["worst_case_all"] = C.mean_std([r["worst_case_all"] for r in ok])
            row["train_seconds"] = C.mean_std([r["train_seconds"] for r in ok])
            if not ok and rs:
                row["error"] = rs[0]["error"]
            summary[f"{framework}/{head}"] = row
    payload = {**C.run_header(NAME, args, sz), "budget": budget, "attacks": list(ATTACKS),
               "autoattack_label": C.autoattack_label(budget),
               "train_steps": STEPS, "summary": summary, "runs": runs}
    path = os.path.join(args.out, f"{NAME}.json")
    C.save_json(path, payload)
    figure(summary, frameworks, os.path.join(args.out, f"{NAME}.png"))
    return path


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
