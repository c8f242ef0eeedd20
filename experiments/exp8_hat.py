"""Experiment 8 — seed 004 (HAT): HAT vs TRADES, and the margin along initial adversarial directions.

HAT (beta 2.5, gamma 0.5, helper step h 2, the standard model of experiment 3
as helper) vs TRADES (the beta = 6 model of experiment 1): clean accuracy,
PGD-20 and AutoAttack. Then the margin of the standard, PGD-AT, TRADES and HAT
models along the standard model's PGD directions r_0 (unit L2, no clip,
cap 35, precision 0.1) and along random directions orthogonal to r_0.

Run: `python experiments/exp8_hat.py [--dataset cifar10 --model preact_resnet18]`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common as C  # noqa: E402
import exp1_table2 as E1  # noqa: E402
import exp3_table7 as E3  # noqa: E402
from he_keras.evaluation.margin import margin_report  # noqa: E402
from he_keras.files import read_json  # noqa: E402

NAME = "exp8_hat"
N_MARGIN = 200
ATTACKS = (C.PGD20,)


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "mnist5k", "trades_cnn", argv)
    sz = C.sizes(args, E1.EPOCHS, E1.N_TRAIN, E1.N_EVAL, batch_size=E1.BATCH)
    log = C.logger(NAME)
    x, _ = C.test_arrays(args.dataset, sz["n_eval"])
    n_margin = 16 if args.quick else N_MARGIN
    margins: list = []

    def runs_of_seed(seed: int) -> list:
        standard, std_info = C.train(E3.standard_spec(sz, args, seed), args.out, sz["n_eval"], log)
        helper = os.path.relpath(os.path.join(args.out, "models", std_info["key"], "model.keras"))
        specs = {
            "PGD-AT": E1.model_spec(sz, args, "pgdat", "linear", seed),
            "TRADES": E1.model_spec(sz, args, "trades", "linear", seed),
            "HAT": C.base_spec(sz, args, framework="hat", head="linear", seed=seed, steps=E1.STEPS,
                               framework_params={"beta": 2.5, "gamma": 0.5, "helper_step": 2.0,
                                                 "helper_model": helper}),
        }
        runs, models = [], {"standard": standard}
        for name, spec in specs.items():
            models[name], info = C.train(spec, args.out, sz["n_eval"], log)
            known = exp1_record(args.out, info["key"], sz["n_eval"])
            if known is not None:  # evaluated by experiment 1 with the same attacks
                runs.append({**known, "group": name, "from": "exp1_table2"})
            else:  # toy run: AutoAttack's path is exercised by experiment 1
                runs.append(C.train_and_eval(spec, args, sz, ATTACKS, log, group=name,
                                             autoattack=name != "PGD-AT" and not args.quick))
        for name, model in models.items():
            rep = margin_report(model, standard, x[:n_margin], sz["eps"], seed=seed)
            margins.append({"group": name, "seed": seed, "report": rep, "metrics": {
                "median margin along r0": rep["adversarial"].get("median"),
                "mean margin along r0": rep["adversarial"].get("mean"),
                "median margin orthogonal": rep["orthogonal"].get("median"),
                "mean margin orthogonal": rep["orthogonal"].get("mean")}})
            log(f"margin {name} seed {seed}: r0 median {rep['adversarial'].get('median')}, "
                f"orthogonal median {rep['orthogonal'].get('median')}")
        return runs

    return C.run_grid(NAME, args, sz, runs_of_seed,
                      lambda p, path: figure(p["summary"], p["margin_summary"], path), log,
                      lambda runs, summary: {"n_margin": n_margin, "margins": margins,
                                             "margin_summary": C.summarize(margins)})


def exp1_record(out: str, key: str, n_eval: int):
    """The run record of a model experiment 1 already evaluated, or None."""
    path = os.path.join(out, "exp1_table2.json")
    runs = read_json(path, "experiment 1 results").get("runs", []) if os.path.exists(path) else []
    return next((r for r in runs if r.get("model_key") == key and r.get("n_eval") == n_eval), None)


def figure(summary: dict, margin_summary: dict, path: str) -> None:
    plt = C.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    groups = [g for g in ("TRADES", "HAT") if g in summary]
    for i, (metric, color) in enumerate((("clean", "C2"), (C.PGD20, "C0"), (C.AUTOATTACK, "C3"))):
        vals = [summary[g].get(metric, {}) for g in groups]
        ax.bar(np.arange(len(groups)) + (i - 1) * 0.27, [100 * (v.get("mean") or 0) for v in vals],
               0.27, yerr=[100 * (v.get("std") or 0) for v in vals], capsize=2, color=color,
               label=metric)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    ax = axes[1]
    groups = [g for g in ("standard", "PGD-AT", "TRADES", "HAT") if g in margin_summary]
    for i, (metric, color) in enumerate((("median margin along r0", "C3"),
                                         ("median margin orthogonal", "C7"))):
        vals = [margin_summary[g].get(metric, {}) for g in groups]
        ax.bar(np.arange(len(groups)) + (i - 0.5) * 0.4, [v.get("mean") or 0 for v in vals], 0.4,
               yerr=[v.get("std") or 0 for v in vals], capsize=2, color=color, label=metric)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel("L2 margin (median over points)")
    ax.legend(fontsize=8)
    C.savefig(fig, path)


if __name__ == "__main__":
    main()
