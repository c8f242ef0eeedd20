"""Timing claims of the study: the HE head's training-time overhead (HE paper, Table 3).

For FastAT and FreeAT, one training step (`train_on_batch`, the framework's
`train_step`) with a linear head and one with an HE head are timed as an
interleaved pair, alternating which goes first, on the same real digits batch
and the study's regime (small_cnn, eps, batch size). Each seed (initialization
of both models) gives `PAIRS` pairs after a warm-up and is saved to
`<results>/timing/<framework>/seed<k>.json` as soon as it is measured; a
finished seed is never re-measured.

The claim "HE adds less than 1 % training time" is decided on the median of
the per-pair ratios HE / linear with a bootstrap interval over pairs
(`stats.ratio_interval`): its effect is `1 - overhead` in percent of the
linear step's time, so the interval lies above 0 exactly when the whole
interval of the overhead lies below 1 %.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

import keras
import numpy as np

from he_keras.data import load_dataset, to_numpy
from he_keras.files import read_json, write_json
from he_keras.models import build_model
from he_keras.training import FRAMEWORKS as TRAINERS

from experiments import arms, stats, workers

PAIRS = 60
SEEDS = 3
WARMUP = 3
# Framework -> (trainer arguments, paper's overhead of HE in %, Table 3).
FRAMEWORKS = {
    "fastat": ({"steps": 1}, 0.9),
    "freeat": ({"steps": 1, "replays": 8}, 0.6),
}
THRESHOLD = 1.0  # percent: "negligible" in the paper's words (< 1 %)


def timing_path(results: str, framework: str, seed: int) -> str:
    return os.path.join(results, "timing", framework, f"seed{seed}.json")


def measure(framework: str, seed: int, pairs: int = PAIRS, dataset: str = "digits") -> dict:
    """Interleaved step times of the linear and the HE head (seconds per step)."""
    regime = arms.REGIMES[dataset]
    data = load_dataset(dataset)
    x, y = to_numpy(data.train, regime["batch_size"])
    params, _ = FRAMEWORKS[framework]
    steps = {}
    for head in ("linear", "he"):
        keras.utils.set_random_seed(seed)
        classifier = build_model(regime["model"], x.shape[1:], data.num_classes, head=head)
        trainer = TRAINERS[framework](classifier, eps=regime["eps"], seed=seed, **params)
        trainer.compile(optimizer=keras.optimizers.Adam(regime["lr"]))
        steps[head] = trainer
    for _ in range(WARMUP):
        for trainer in steps.values():
            trainer.train_on_batch(x, y)
    times: dict = {"linear": [], "he": []}
    for i in range(pairs):
        order = ("linear", "he") if i % 2 == 0 else ("he", "linear")
        for head in order:
            start = time.perf_counter()
            steps[head].train_on_batch(x, y)
            times[head].append(time.perf_counter() - start)
    return {"framework": framework, "seed": seed, "dataset": dataset, "batch_size": len(x),
            "pairs": pairs, "seconds": times, "load_average": os.getloadavg()[0],
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def run(results: str, seeds: int = SEEDS, pairs: int = PAIRS, log=print,
        frameworks: Sequence[str] = tuple(FRAMEWORKS)) -> None:
    """Measures every framework (of `frameworks`) x seed not measured yet (one
    thread, as the study's units train)."""
    workers.one_thread()
    for framework in frameworks:
        for seed in range(seeds):
            path = timing_path(results, framework, seed)
            if not os.path.exists(path):
                write_json(path, measure(framework, seed, pairs))
                log(f"  timed {framework} seed {seed}")


def records(results: str, seeds: int = SEEDS) -> tuple[list, list]:
    """`(records, pending)` of the timing claims (`summary.json` fields)."""
    done, pending = [], []
    for framework, (_, paper) in FRAMEWORKS.items():
        name = {"fastat": "FastAT", "freeat": "FreeAT"}[framework]
        claim = {"id": f"6-{framework}", "claim": f"The HE head adds less than {THRESHOLD:g} % to the "
                 f"training step time of {name}"}
        paths = [timing_path(results, framework, s) for s in range(seeds)]
        if not all(os.path.exists(p) for p in paths):
            pending.append({**claim, "pending": f"{sum(not os.path.exists(p) for p in paths)} "
                            "timing seed(s) not measured"})
            continue
        runs = [read_json(p, "timing run") for p in paths]
        he = np.concatenate([r["seconds"]["he"] for r in runs])
        linear = np.concatenate([r["seconds"]["linear"] for r in runs])
        ratio = stats.ratio_interval(he, linear)
        # effect = threshold - overhead (percent of the linear step's time).
        effect = THRESHOLD - 100 * (ratio["ratio"] - 1)
        low, high = THRESHOLD - 100 * (ratio["ci_high"] - 1), THRESHOLD - 100 * (ratio["ci_low"] - 1)
        low, high = round(low, 3), round(high, 3)
        # effect = threshold - overhead: the ratio's upper band gives the lower bound's.
        low_band = sorted(round(THRESHOLD - 100 * (r - 1), 3) for r in ratio["ci_high_mc"])
        high_band = sorted(round(THRESHOLD - 100 * (r - 1), 3) for r in ratio["ci_low_mc"])
        done.append({
            **claim, "source": "HE paper, Table 3",
            "verdict": stats.verdict(low, high, None, None, regime_applies=False,
                                     load_average=[r["load_average"] for r in runs]),
            "effect": round(effect, 3), "ci_low": low, "ci_high": high,
            "width": round(high - low, 3),
            # A claim about a threshold: no smallest effect of interest.
            "delta": 0.0, "mc_error": round(stats.mc_error(low_band, high_band), 4),
            "ci_low_mc": low_band, "ci_high_mc": high_band,
            "borderline": stats.borderline(low_band, high_band, 0.0), "unit": f"percent of step time ({THRESHOLD:g} % - HE overhead)",
            "seeds": len(runs), "n_eval": int(len(he)), "baseline": framework, "baseline_clean": None,
            "baseline_autoattack": None, "baseline_trend": None, "regime_applies": False, "dataset": runs[0]["dataset"],
            "eps": arms.REGIMES[runs[0]["dataset"]]["eps"], "epochs": None,
            "paper": f"+{paper} % training time (CIFAR-10, GPU)",
            "section": "paper", "arm": f"{framework}_he", "against": framework,
            "metric": "training step time (median ratio of interleaved pairs)",
            "protocol": {f"{arm} / step time": [f"{framework} training steps timed in interleaved pairs"]
                         for arm in (f"{framework}_he", framework)},
            "non_inferiority": 0.0, "ceiling": None, "failed_units": [],
            "overhead_percent": round(100 * (ratio["ratio"] - 1), 3),
            "load_average": [r["load_average"] for r in runs],
        })
    return done, pending


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default=arms.RESULTS)
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--pairs", type=int, default=PAIRS)
    args = p.parse_args(argv)
    run(args.results, args.seeds, args.pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
