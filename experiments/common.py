"""What the reproduction experiments share; training and evaluation are the library's.

- `train`: a spec (fields of `TrainConfig`) through `he_keras.training.runner.run`,
  the loop of `apps/train.py`, in `<out>/models/<hash of the spec>/`; a finished
  run is loaded (`he_keras.models.io.load_model`), a killed one resumes;
- `evaluate`: `he_keras.evaluation.evaluate`, the path of `apps/evaluate.py`, with
  attacks of its presets (AutoAttack-standard included) plus the `EXTRAS`;
- `parse_args`, `sizes`, `train_and_eval`, `summarize`, `run_grid`: flags, per-seed
  records, mean ± std, JSON and figure rewritten after every seed.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from he_keras import defaults, evaluation  # noqa: E402
from he_keras.attacks import adaptive, apgd  # noqa: E402
from he_keras.data import load_dataset, to_numpy  # noqa: E402
from he_keras.evaluation.ensemble import SuiteAttack  # noqa: E402
from he_keras.evaluation.suite import AUTOATTACK as AUTOATTACK_PARTS  # noqa: E402
from he_keras.files import read_json, write_json  # noqa: E402
from he_keras.models.io import load_model  # noqa: E402
from he_keras.training.runner import TrainConfig, run  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results")
# Bump to invalidate every cached model (changes of the training path).
CACHE_VERSION = 2
NUM_CLASSES = 10

# Attack names in the results (the suite's names; EXTRAS below).
PGD20, FGSM, CW, HE_ADAPTIVE, TEMPERATURE = "PGD-20", "FGSM", "CW-Linf", "HE-adaptive", "Temperature-PGD"
PGD20_COS, APGD_CE, APGD_DLR, AUTOATTACK = "PGD-20 (raw cos)", "APGD-CE", "APGD-DLR", "AutoAttack"
AUTOATTACK_LABEL = "AutoAttack-standard of he_keras.evaluation.suite (settings: each run's `configs`)"
STEP, STEPS = defaults.pgd_step_size, defaults.EVAL_PGD_STEPS

# Experiment-specific attacks, not in the suite's presets: `name(eps, seed)`.
EXTRAS: dict[str, Callable[[float, int], Any]] = {
    PGD20_COS: lambda eps, seed: adaptive.HEAdaptivePGD(
        eps, STEP(eps, STEPS), STEPS, objectives=("raw_ce",), seed=seed + 4),
    APGD_DLR: lambda eps, seed: apgd.APGD(eps, loss="dlr", seed=seed + 24),
    "PGD-50": lambda eps, seed: adaptive.PGDRestarts(eps, STEP(eps, 50), 50, restarts=1, seed=seed + 5),
}


def temperature_pgd(inverse_temperature: float) -> tuple[str, Callable]:
    """`("Temperature-PGD 1/T=<t>", builder)`: the suite's Temperature-PGD at one 1/T."""
    return f"{TEMPERATURE} 1/T={inverse_temperature:g}", lambda eps, seed: adaptive.TemperaturePGD(
        eps, STEP(eps, STEPS), STEPS, temperatures=(1.0 / inverse_temperature,), seed=seed + 10)


def parse_args(description: str, dataset: str, model: str, argv: Optional[Sequence[str]] = None,
               seeds: int = 3) -> argparse.Namespace:
    """The flags every experiment takes (`--quick` shrinks every size to a toy run)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", default=dataset, help="digits, mnist5k, cifar10, ...")
    p.add_argument("--model", default=model, help="small_cnn, trades_cnn, wide_resnet, ...")
    p.add_argument("--seeds", type=int, default=seeds, help="number of seeds")
    p.add_argument("--epochs", type=int, default=0, help="training epochs (0: script default)")
    p.add_argument("--n-train", type=int, default=-1, help="training images (0: all, -1: default)")
    p.add_argument("--n-eval", type=int, default=0, help="test images evaluated (0: default)")
    p.add_argument("--eps", type=float, default=0.0, help="L-inf radius (0: dataset default)")
    p.add_argument("--batch-size", type=int, default=0, help="batch size (0: default)")
    p.add_argument("--quick", action="store_true", help="toy sizes (seconds), for the tests")
    p.add_argument("--out", default=DEFAULT_OUT, help="results directory")
    return p.parse_args(argv)


def sizes(args: argparse.Namespace, epochs: int, n_train: int, n_eval: int, batch_size: int = 64) -> dict:
    """Run sizes: flags > quick toy sizes > script defaults; eps 0.3 on digit data, else 8/255."""
    if args.quick:
        epochs, n_train, n_eval = 1, 128, 32
    return {"epochs": args.epochs or epochs, "n_train": n_train if args.n_train < 0 else args.n_train,
            "n_eval": args.n_eval or n_eval, "seeds": 1 if args.quick else args.seeds,
            "eps": args.eps or (0.3 if args.dataset in ("digits", "mnist5k", "mnist") else 8 / 255),
            "batch_size": args.batch_size or batch_size}


# `run_all.py` sets this (seconds since the epoch): an experiment starts a new
# seed only if, at the pace of the seeds it already ran, it ends before it.
DEADLINE_ENV = "HE_EXPERIMENT_DEADLINE"


def seed_loop(sz: dict, log: Callable = print):
    """Yields seeds 0..seeds-1, stopping early when the next would overrun the budget.

    Seed 0 always runs; `sz["seeds_run"]` counts the completed seeds.
    """
    deadline, start = float(os.environ.get(DEADLINE_ENV, "inf")), time.time()
    sz["seeds_run"] = 0
    for seed in range(sz["seeds"]):
        per_seed = (time.time() - start) / max(seed, 1)
        if seed > 0 and time.time() + per_seed > deadline:
            log(f"time budget: stopping after {seed} of {sz['seeds']} seeds ({per_seed:.0f}s per seed)")
            return
        yield seed
        sz["seeds_run"] = seed + 1


@functools.lru_cache(maxsize=None)
def test_arrays(name: str, n: int) -> tuple:
    """The first `n` test images and labels (a fixed subset)."""
    return to_numpy(load_dataset(name).test, n or None)


def base_spec(sz: dict, args: argparse.Namespace, **overrides: Any) -> dict:
    """A training spec (`TrainConfig` fields; None = the library's default) with `overrides`."""
    spec = {"dataset": args.dataset, "model": args.model, "head": "linear", "framework": "pgdat",
            "eps": sz["eps"], "steps": 3, "epochs": sz["epochs"], "n_train": sz["n_train"],
            "batch_size": sz["batch_size"], "optimizer": "adam", "lr": 1e-3, "seed": 0}
    spec.update(overrides)
    return spec


def train(spec: dict, out: str, n_eval: int, log: Callable = print) -> tuple[keras.Model, dict]:
    """Trains `spec` with `runner.run` (or loads the finished run); returns `(classifier, info)`."""
    key = hashlib.sha1(json.dumps({"v": CACHE_VERSION, **spec}, sort_keys=True).encode()).hexdigest()[:14]
    directory = os.path.join(out, "models", key)
    info_path = os.path.join(directory, "info.json")
    if not os.path.exists(info_path):
        config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()},
                             output_dir=directory, n_eval=n_eval, verbose=0)
        seconds, began = [], {}  # wall-clock seconds of every epoch
        timer = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda *_: began.update(t=time.perf_counter()),
            on_epoch_end=lambda *_: seconds.append(time.perf_counter() - began["t"]))
        metrics = run(config, extra_callbacks=[timer])
        seconds = seconds or [metrics["train_seconds"]]
        info = {"spec": spec, "key": key, "history": metrics["history"], "test": metrics["test"],
                "train_seconds": metrics["train_seconds"], "epoch_seconds": seconds,
                # Tracing-free estimate: the median epoch (the first one compiles)
                # times the epochs of the run (a resumed run timed only the last ones).
                "steady_train_seconds": float(np.median(seconds[1:] or seconds))
                * len(metrics["history"].get("loss", seconds))}
        write_json(info_path, info)
        log(f"  trained {spec['framework']}/{spec['head']} seed {spec['seed']} in "
            f"{info['train_seconds']:.0f}s: {({k: round(v[-1], 3) for k, v in info['history'].items()})}")
    info = read_json(info_path, "experiment model info")
    return load_model(os.path.join(directory, "model.keras")), info


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, eps: float, seed: int,
             attacks: Sequence[str], autoattack: bool = False, classwise: bool = False,
             extras: Sequence[tuple] = ()) -> tuple[dict, dict]:
    """Evaluates with `he_keras.evaluation.evaluate` (as `apps/evaluate.py` does).
    No claim uses a curve: they are skipped (their checks then say "not run").

    Args:
        attacks: Names of preset attacks (quick suite) or of `EXTRAS` to run.
        autoattack: Run AutoAttack-standard first (the `standard` preset's).
        classwise: Add the class-wise analysis (the `standard` suite's extras).
        extras: More `(name, builder(eps, seed))` pairs.

    Returns:
        `(metrics, report)`: `{"clean", <attack>: accuracy, "AutoAttack",
        "worst_case_all"}` and the suite's report.
    """
    suite = "standard" if autoattack or classwise else "quick"
    preset, _ = evaluation.preset_attacks("standard" if autoattack else "quick", model, eps, "linf",
                                          seed, NUM_CLASSES)
    chosen = [a for a in preset if a.name in attacks or (autoattack and a.name in AUTOATTACK_PARTS)]
    for name, build in [(n, EXTRAS[n]) for n in attacks if n in EXTRAS] + list(extras):
        attack = build(eps, seed)
        chosen.append(SuiteAttack(name, attack, attack.config()))
    report = evaluation.evaluate(model, x, y, NUM_CLASSES, suite=suite, attacks=chosen, eps=eps,
                                 seed=seed, batch_size=250, curves=False)
    metrics = {"clean": report["clean_accuracy"]}
    metrics.update({a["name"]: a["accuracy"] for a in report["attacks"] if a["accuracy"] is not None})
    if autoattack:  # APGD-CE runs first, on every clean-correct point: its own accuracy
        metrics[APGD_CE] = report["attacks"][0]["cumulative_accuracy"]
        metrics[AUTOATTACK] = report["headline"].get("AutoAttack-standard")
    metrics["worst_case_all"] = report["robust_accuracy"]
    return metrics, report


def mean_std(values: Sequence[Any]) -> dict:
    """Mean ± std (ddof=1; 0 for one value) of the numbers; strings pass through as `note`."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums:
        notes = [v for v in values if isinstance(v, str)]
        return {"mean": None, "std": None, "n": 0, "note": notes[0] if notes else "not run"}
    return {"mean": float(np.mean(nums)), "std": float(np.std(nums, ddof=1)) if len(nums) > 1 else 0.0,
            "n": len(nums), "values": nums}


def summarize(runs: Sequence[dict]) -> dict:
    """Mean ± std over seeds of every metric, per `group` of the run records."""
    summary: dict = {}
    for group in dict.fromkeys(r["group"] for r in runs):
        rs = [r for r in runs if r["group"] == group]
        ok = [r for r in rs if "error" not in r]
        names = list(dict.fromkeys(k for r in ok for k in r["metrics"]))
        summary[group] = {k: mean_std([r["metrics"].get(k) for r in ok]) for k in names}
        if not ok:
            summary[group]["error"] = rs[0]["error"]
    return summary


def train_and_eval(spec: dict, args: argparse.Namespace, sz: dict, attacks: Sequence[str], log: Callable,
                   group: str, autoattack: bool = False, classwise: bool = False,
                   extra: Optional[dict] = None, extras: Sequence[tuple] = ()) -> dict:
    """Trains (cached) and evaluates one spec; returns its run record."""
    model, info = train(spec, args.out, sz["n_eval"], log)
    x, y = test_arrays(args.dataset, sz["n_eval"])
    metrics, report = evaluate(model, x, y, sz["eps"], spec["seed"], attacks, autoattack, classwise, extras)
    metrics.update(train_seconds=info["train_seconds"], steady_train_seconds=info["steady_train_seconds"])
    record = {"group": group, "seed": spec["seed"], **(extra or {}), "metrics": metrics,
              "model_key": info["key"], "n_eval": report["settings"]["n"],
              "flags": [c["name"] for c in report["checks"] if c["flagged"]],
              "configs": {a["name"]: a["config"] for a in report["attacks"]}}
    if "classwise" in report:
        record["classwise"] = report["classwise"]
    log(f"{group} seed {spec['seed']}: " + ", ".join(f"{k}={v if v is None else round(v, 3)}"
                                                     for k, v in metrics.items()))
    return record


def budget_of(runs: Sequence[dict]) -> dict:
    """Iterations of the attacks that ran (from the configs in the records), for the report."""
    cfg = next((r["configs"] for r in runs if "configs" in r), {})
    temperatures = cfg.get(TEMPERATURE, {}).get("temperatures", [])
    return {"pgd_steps": cfg.get(PGD20, {}).get("steps"), "cw_steps": cfg.get(CW, {}).get("steps"),
            "apgd_iters": (cfg.get(APGD_DLR) or cfg.get(APGD_CE) or {}).get("steps"),
            "inverse_temperatures": [round(1.0 / t, 6) for t in temperatures]}


def run_header(name: str, args: argparse.Namespace, sz: dict) -> dict:
    """The settings block at the top of every result JSON."""
    return {"experiment": name, "dataset": args.dataset, "model": args.model, "quick": bool(args.quick),
            "sizes": sz, "keras_version": keras.__version__, "argv": sys.argv[1:],
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def logger(name: str) -> Callable:
    """A flushed printer prefixed with the experiment name and wall time."""
    start = time.perf_counter()
    return lambda msg: print(f"[{name} {time.perf_counter() - start:6.0f}s] {msg}", flush=True)


def pyplot():
    """matplotlib.pyplot with the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    return __import__("matplotlib.pyplot").pyplot


def savefig(fig: Any, path: str) -> None:
    """Saves a figure (PNG, 110 dpi) and closes it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def run_grid(name: str, args: argparse.Namespace, sz: dict, runs_of_seed: Callable[[int], list],
             figure: Callable[[dict, str], None], log: Callable, extra: Any = None) -> str:
    """Runs every seed the time budget allows; rewrites `<name>.json` / `.png` after each.

    Args:
        runs_of_seed: `seed -> list of run records`.
        figure: `(payload, png_path) -> None`, payload = the JSON written.
        extra: A dict, or `(runs, summary) -> dict`, merged into the JSON.

    Returns:
        The JSON path.
    """
    runs: list = []

    def save() -> str:
        summary = summarize(runs)
        more = extra(runs, summary) if callable(extra) else (extra or {})
        path = os.path.join(args.out, f"{name}.json")
        payload = {**run_header(name, args, sz), "budget": budget_of(runs),
                   "autoattack_label": AUTOATTACK_LABEL, **more, "summary": summary, "runs": runs}
        write_json(path, payload)
        figure(payload, os.path.join(args.out, f"{name}.png"))
        return path

    for seed in seed_loop(sz, log):
        runs.extend(runs_of_seed(seed))
        save()
    path = save()
    log(f"wrote {path}")
    return path

