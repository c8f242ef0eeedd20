"""Experiment 3 — HE paper Table 7: PGD-1 / PGD-2 with and without FN in the attack objective.

A standardly trained model (linear head, no FN) is attacked by PGD-1 and
PGD-2 (zero start, step eps / K) whose objective is cross-entropy on either
the model's logits (no FN) or on logits recomputed from L2-normalized
penultimate features, `W^T z / ||z|| * mean||z|| + b` (FN; the constant
mean clean feature norm keeps the softmax temperature comparable). The
adversarial examples are always scored by the real model. Several eps are
reported because a standard MNIST model is already broken at eps = 0.3.

Run: `python experiments/exp3_table7.py [--dataset cifar10 --model wide_resnet]`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import common as C  # noqa: E402
from he_keras.attacks.core import ProjectedGradientAttack  # noqa: E402
from he_keras.evaluation.ensemble import SuiteAttack, predict_logits, run_ensemble  # noqa: E402
from he_keras.files import write_json  # noqa: E402

NAME = "exp3_table7"
EPOCHS, N_EVAL = 2, 500
EPS_GRID = (0.05, 0.1, 0.2, 0.3)


def standard_spec(sz, args, seed):
    """The standard model shared with experiment 8 (HAT's helper): clean
    training on the whole training split for `EPOCHS` epochs."""
    return C.base_spec(sz, args, framework="standard", head="linear", seed=seed,
                       epochs=1 if args.quick else EPOCHS, n_train=256 if args.quick else 0,
                       steps=1, batch_size=64)


def fn_logits_model(model: keras.Model, x_ref: np.ndarray) -> keras.Model:
    """Logits recomputed from L2-normalized penultimate features (FN)."""
    head = model.get_layer("head")
    features = keras.Model(model.inputs, head.input)
    norm = float(np.mean(np.linalg.norm(predict_logits(features, x_ref, 250), axis=1)))
    kernel, bias = head.kernel, head.bias

    def call(x, training=False):
        z = features(x, training=training)
        z = tf.math.l2_normalize(z, axis=-1) * norm
        return tf.matmul(z, kernel) + bias

    return call, norm


def main(argv=None) -> str:
    args = C.parse_args(__doc__, "mnist5k", "trades_cnn", argv)
    sz = C.sizes(args, EPOCHS, 0, N_EVAL)
    log = C.logger(NAME)
    x, y = C.test_arrays(args.dataset, sz["n_eval"])
    eps_grid = sorted(set(EPS_GRID) | {sz["eps"]}) if args.dataset in ("digits", "mnist5k", "mnist") \
        else sorted({sz["eps"] / 4, sz["eps"] / 2, sz["eps"]})
    runs = []
    def save() -> str:
        summary = C.summarize(runs)
        payload = {**C.run_header(NAME, args, sz), "eps_grid": eps_grid, "summary": summary,
                   "runs": runs}
        path = os.path.join(args.out, f"{NAME}.json")
        write_json(path, payload)
        figure(summary.get("standard", {}), eps_grid, os.path.join(args.out, f"{NAME}.png"))
        return path

    for seed in C.seed_loop(sz, log):
        model, info = C.train(standard_spec(sz, args, seed), args.out, sz["n_eval"], log)
        fn_model, norm = fn_logits_model(model, x)
        metrics = {}
        for eps in eps_grid:
            for k in (1, 2):
                for fn in (False, True):
                    pgd = ProjectedGradientAttack(eps=eps, step_size=eps / k, steps=k,
                                                  random_start="zero", seed=seed)
                    if fn:
                        attack = (lambda p: lambda m, xb, yb: p(fn_model, xb, yb))(pgd)
                    else:
                        attack = pgd
                    name = f"PGD-{k} {'FN' if fn else 'no FN'} eps={eps:g}"
                    res = run_ensemble(model, x, y, [SuiteAttack(name, attack, {})], eps)
                    metrics[name] = res.robust_accuracy
                    metrics["clean"] = res.clean_accuracy
        runs.append({"group": "standard", "seed": seed, "metrics": metrics,
                     "feature_norm_scale": norm, "model_key": info["key"]})
        log(f"seed {seed}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        save()
    path = save()
    log(f"wrote {path}")
    return path


def figure(row: dict, eps_grid, path: str) -> None:
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for k, style in ((1, "-"), (2, "--")):
        for fn, color in ((False, "C0"), (True, "C3")):
            vals = [row.get(f"PGD-{k} {'FN' if fn else 'no FN'} eps={e:g}", {}) for e in eps_grid]
            ax.errorbar(eps_grid, [100 * (v.get("mean") or 0) for v in vals],
                        yerr=[100 * (v.get("std") or 0) for v in vals], ls=style, color=color,
                        marker="o", capsize=2, label=f"PGD-{k}, {'with' if fn else 'without'} FN")
    ax.set_xlabel("eps")
    ax.set_ylabel("accuracy of the standard model (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    C.savefig(fig, path)


if __name__ == "__main__":
    main()
