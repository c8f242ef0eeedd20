"""Experiment 8 — seed 004 (HAT): HAT vs TRADES, and the margin along initial adversarial directions.

HAT (beta 2.5, gamma 0.5, helper step h 2, the standard model of experiment 3
as helper) vs TRADES (the beta = 6 model of experiment 1): clean accuracy,
PGD-20 and AutoAttack. Then the margin of the standard, PGD-AT, TRADES and HAT
models along the standard model's PGD directions r_0 (unit L2, no clip,
cap 35, precision 0.1) and along random directions orthogonal to r_0.

Run: `python experiments/exp8_hat.py [--dataset cifar10 --model preact_resnet18]`.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import common as C  # noqa: E402
import exp1_table2 as E1  # noqa: E402
import exp3_table7 as E3  # noqa: E402
from he_keras.evaluation.margin import margin_report  # noqa: E402

NAME = "exp8_hat"
N_MARGIN = 200
ATTACKS = (C.PGD20,)


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "mnist5k", "trades_cnn", argv)
    sz = C.sizes(args, E1.EPOCHS, E1.N_TRAIN, E1.N_EVAL, batch_size=E1.BATCH)
    log = C.logger(NAME)
    budget = C.attack_budget(E1.BUDGET, args.quick)
    x, y = C.test_arrays(args.dataset, sz["n_eval"])
    n_margin = 16 if args.quick else N_MARGIN
    runs, margins = [], []
    def save() -> str:
        summary = C.summarize(runs)
        margin_summary = C.summarize(margins)
        payload = {**C.run_header(NAME, args, sz), "budget": budget,
                   "autoattack_label": C.autoattack_label(budget), "n_margin": n_margin,
                   "summary": summary, "margin_summary": margin_summary, "runs": runs,
                   "margins": margins}
        path = os.path.join(args.out, f"{NAME}.json")
        C.save_json(path, payload)
        figure(summary, margin_summary, os.path.join(args.out, f"{NAME}.png"))
        return path

    for seed in C.seed_loop(sz, log):
        try:
            standard, std_info = C.train(E3.standard_spec(sz, args, seed), args.out, log)
        except C.MissingPiece as err:
            runs.append({"group": "HAT", "seed": seed, "error": f"not run: {err} missing"})
            continue
        helper_path = os.path.join(args.out, "models", std_info["key"], "model.keras")
        specs = {
            "PGD-AT": E1.model_spec(sz, args, "pgdat", "linear", seed),
            "TRADES": E1.model_spec(sz, args, "trades", "linear", seed),
            "HAT": C.base_spec(sz, args, framework="hat", head="linear", seed=seed,
                               steps=E1.STEPS, framework_params={
                                   "beta": 2.5, "gamma": 0.5, "helper_step": 2.0,
                                   "helper_model": os.path.relpath(helper_path)}),
        }
        models = {"standard": standard}
        for name, spec in specs.items():
            known = exp1_metrics(args.out, spec, sz["n_eval"])
            if known is not None:  # evaluated by experiment 1 with the same budget
                model, info = C.train(spec, args.out, log)
                models[name] = model
                runs.append({"group": name, "seed": seed, "metrics": known,
                             "model_key": info["key"], "from": "exp1_table2"})
                continue
            r = C.train_and_eval(spec, args, sz, ATTACKS, budget, name != "PGD-AT", log,
                                 group=name, keep_result=True)
            r.pop("_result", None)
            model = r.pop("_model", None)
            if model is not None:
                models[name] = model
            runs.append(r)
        for name, model in models.items():
            rep = margin_report(model, standard, x[:n_margin], sz["eps"], seed=seed)
            margins.append({"group": name, "seed": seed, "metrics": {
                "median margin along r0": rep["adversarial"].get("median"),
                "mean margin along r0": rep["adversarial"].get("mean"),
                "median margin orthogonal": rep["orthogonal"].get("median"),
                "mean margin orthogonal": rep["orthogonal"].get("mean")}, "report": rep})
            log(f"margin {name} seed {seed}: r0 median {rep['adversarial'].get('median')}, "
                f"orthogonal median {rep['orthogonal'].get('median')}")
        save()
    path = save()
    log(f"wrote {path}")
    return path


def exp1_metrics(out: str, spec: dict, n_eval: int):
    """Clean / PGD-20 / AutoAttack of a model experiment 1 already evaluated."""
    path = os.path.join(out, "exp1_table2.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        res = json.load(f)
    key = C.spec_key(spec)
    for r in res.get("runs", []):
        if r.get("model_key") == key and r.get("n") == n_eval and "error" not in r:
            return {"clean": r["clean"], C.PGD20: r["attacks"].get(C.PGD20),
                    C.AUTOATTACK: r.get("autoattack"), "train_seconds": r["train_seconds"]}
    return None


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
