"""Calibration of the training regime (issue 14, item 1: "Regime first").

Trains plain PGD-AT settings through the library's one training path
(`he_keras.runs.run`) and evaluates each model on the whole test
split with the evaluation suite's `standard` preset (AutoAttack-standard:
APGD-CE -> APGD-T -> FAB-T -> Square, then PGD-20 and the quick attacks; the
same call `apps/evaluate.py --suite=standard` makes). A setting is *in the
regime* when

- clean test accuracy >= 90 %,
- AutoAttack-standard robust test accuracy lies in [25 %, 85 %], and
- training converged: the validation robust accuracy (PGD-10 on the seeded
  validation split, logged by the runner after every epoch) changes by less
  than 1 point across its last 5 epochs after the last LR decay (a fitted
  line: `experiments.stats.trend` / `converged`, the rule the study's
  verdicts use too).

Model selection uses the validation curve only; the test numbers are
recorded, never used to pick epochs.

Every setting writes `experiments/results/calibration/<name>.json`
atomically as soon as its evaluation finishes, and the figure
`calibration.png` (validation robust accuracy per epoch, one line per
setting, one panel per dataset) is redrawn from all JSONs present. A setting
whose JSON exists is skipped, and training resumes from its last checkpoint
under `--runs_dir`, so a re-run after a kill continues where it stopped.

Usage:
  nice -n 10 python -m experiments.calibrate --settings=digits_e30_s7_ep30
  python -m experiments.calibrate --list
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

from he_keras.data import load_dataset, to_numpy
from he_keras.evaluation import evaluate, run_ensemble, write_report
from he_keras.evaluation.presets import autoattack_standard
# pyplot with the headless backend chosen before it loads.
from he_keras.evaluation.report_io import plt, save_figure
from he_keras.files import read_json, write_json
from he_keras.models.io import load_model
from he_keras.runs import TrainConfig, run

from experiments import stats
from experiments.calibration_settings import SETTINGS
from experiments.validation_noise import fixed_seed_validation, validation_attack_noise

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results", "calibration")
RUNS_DIR = os.path.join(os.path.dirname(HERE), "runs", "calibration")

PLATEAU_EPOCHS = 5

def plateau(values: Sequence[float], window: int = PLATEAU_EPOCHS) -> dict:
    """How much the last `window` values still move.

    Args:
        values: Per-epoch validation robust accuracy.
        window: Number of final epochs.

    Returns:
        `{"window", "span", "change", "mean_change"}`: span (max - min) and
        net change (last - first) of the last `window` values, and the mean
        of the last `window` minus the mean of the `window` before (None
        where too few values exist).
    """
    values = list(values)
    tail = values[-window:]
    out = {"window": window, "span": None, "change": None, "mean_change": None}
    if len(tail) == window:
        out.update(span=max(tail) - min(tail), change=tail[-1] - tail[0])
    if len(values) >= 2 * window:
        out["mean_change"] = float(np.mean(tail) - np.mean(values[-2 * window:-window]))
    return out


def regime(clean: float, autoattack: float, val_adv: Sequence[float],
           lr_decay_epochs: Sequence[float] = ()) -> dict:
    """Checks the regime of issue 14 on one trained model (the study's `stats` rules).

    Args:
        clean: Clean test accuracy.
        autoattack: AutoAttack-standard robust test accuracy.
        val_adv: Per-epoch validation robust accuracy.
        lr_decay_epochs: The run's LR decays (the trend is read after the last).

    Returns:
        Each criterion's flag, the validation `trend` (points) and `"met"`
        (all criteria).

    Example:

    ```python
    regime(0.95, 0.40, [0.30, 0.40, 0.40, 0.405, 0.40, 0.40])["met"]  # True
    ```
    """
    trend = stats.trend(val_adv, lr_decay_epochs=lr_decay_epochs) if len(val_adv) >= PLATEAU_EPOCHS else None
    checks = {
        "clean_ge_90": clean >= stats.MIN_CLEAN,
        "autoattack_in_25_85": stats.AUTOATTACK_RANGE[0] <= autoattack <= stats.AUTOATTACK_RANGE[1],
        "val_converged": stats.converged([trend]),
    }
    return dict(checks, val_trend=trend, met=all(checks.values()))


def train(name: str, setting: dict, runs_dir: str) -> dict:
    """Trains one setting (or resumes it, or reads it back when finished).

    Returns:
        The runner's metrics dictionary, with the wall time of this call and
        the load average around it.
    """
    output_dir = os.path.join(runs_dir, name)
    metrics_path = os.path.join(output_dir, "metrics.json")
    if os.path.exists(metrics_path):
        metrics = read_json(metrics_path, "metrics")
        if "test" in metrics and os.path.exists(os.path.join(output_dir, "model.keras")):
            return metrics
    config = TrainConfig(output_dir=output_dir, tensorboard=False, **setting)
    load = os.getloadavg()[0]
    started = time.time()
    metrics = run(config, extra_callbacks=[fixed_seed_validation(setting)])
    metrics["wall_seconds"] = time.time() - started
    metrics["load_average"] = {"start": load, "end": os.getloadavg()[0]}
    return metrics


def evaluate_test(model_path: str, dataset: str, eps: float, seed: int = 0) -> dict:
    """AutoAttack-standard (and the quick attacks) on the whole test split.

    Returns:
        The suite's report, with the wall time and load average around it.
    """


    data = load_dataset(dataset)
    x, y = to_numpy(data.test)
    model = load_model(model_path)
    load = os.getloadavg()[0]
    started = time.time()
    report = evaluate(model, x, y, data.num_classes, suite="standard", eps=eps, seed=seed,
                      dataset=dataset, model_name=os.path.basename(os.path.dirname(model_path)))
    report["wall_seconds"] = time.time() - started
    report["load_average"] = {"start": load, "end": os.getloadavg()[0]}
    return report


def autoattack_subset(model_path: str, dataset: str, eps: float, n: int, seed: int = 0) -> dict:
    """AutoAttack-standard alone on the first `n` test points (a timing
    probe; the regime needs the whole split).

    Runs the attacks of the suite's `autoattack_standard` through the same
    ensemble (each on the still-robust points), without the quick attacks,
    curves and checks of the `standard` preset.

    Returns:
        `{"n", "eps", "clean_accuracy", "autoattack_accuracy", "attacks"}`.
    """


    data = load_dataset(dataset)
    x, y = to_numpy(data.test, limit=n)
    model = load_model(model_path)
    attacks, _ = autoattack_standard(eps, "linf", seed, data.num_classes)
    load = os.getloadavg()[0]
    result = run_ensemble(model, x, y, attacks, eps, "linf", 128)
    return {
        "n": int(len(x)), "eps": eps, "clean_accuracy": result.clean_accuracy,
        "autoattack_accuracy": result.robust_accuracy,
        "attacks": [{k: v for k, v in a.to_json().items() if k in
                     ("name", "n_attacked", "n_broken", "cumulative_accuracy", "seconds")}
                    for a in result.attacks],
        "load_average": {"start": load, "end": os.getloadavg()[0]},
    }


def summarize(name: str, setting: dict, metrics: dict, report: dict, noise: dict) -> dict:
    """The calibration record of one setting."""
    attacks = {a["name"]: a for a in report["attacks"]}
    history = metrics["history"]
    val_adv = history.get("val_adv_accuracy", [])
    # The plateau is judged on the fixed-seed curve where it was logged.
    val_fixed = history.get("val_adv_fixed_accuracy", [])
    clean = report["clean_accuracy"]
    autoattack = report["headline"]["AutoAttack-standard"]
    record = {
        "name": name,
        "setting": setting,
        "config": metrics["config"],
        "train": {
            "epochs": metrics["passes"],
            "train_seconds": metrics["train_seconds"],
            "seconds_per_epoch": metrics["train_seconds"] / max(1, metrics["passes"]),
            "wall_seconds": metrics.get("wall_seconds"),
            "load_average": metrics.get("load_average"),
        },
        "validation": dict(metrics["validation"], curves={
            "val_clean_accuracy": history.get("val_clean_accuracy", []),
            "val_adv_accuracy": val_adv,
            "val_adv_fixed_accuracy": val_fixed,
            "clean_accuracy": history.get("clean_accuracy", []),
            "adv_accuracy": history.get("adv_accuracy", []),
        }, attack_noise=noise),
        "test": {
            "n": report["settings"]["n"],
            "eps": report["settings"]["eps"],
            "clean_accuracy": clean,
            "pgd20_accuracy": attacks["PGD-20"]["accuracy"],
            "autoattack_accuracy": autoattack,
            "autoattack_cumulative": {
                n: attacks[n]["cumulative_accuracy"] for n in ("APGD-CE", "APGD-T", "FAB-T", "Square")
            },
            "worst_case_accuracy": report["robust_accuracy"],
            "runner_pgd": metrics["test"],
            "attack_seconds": {n: a["seconds"] for n, a in attacks.items()},
            "eval_seconds": report["seconds"],
            "eval_wall_seconds": report["wall_seconds"],
            "eval_load_average": report["load_average"],
            "flagged_checks": [c["name"] for c in report["checks"] if c["flagged"]],
        },
    }
    return derive(record)


def unevaluated(name: str, metrics: dict) -> dict:
    """The record of a setting trained without its AutoAttack evaluation.

    It holds the curves, the plateau of the last epochs and the runner's
    PGD-20 on the whole test split; no regime verdict (AutoAttack not run).
    """
    history = metrics["history"]
    return {
        "name": name,
        "config": metrics["config"],
        "history": history,
        "plateau": plateau(history.get("val_adv_accuracy", [])),
        "plateau_fixed_seed": plateau(history.get("val_adv_fixed_accuracy", [])),
        "runner_test_pgd20": metrics["test"],
        "status": "trained with --train_only: AutoAttack-standard not run, no regime verdict",
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": metrics.get("wall_seconds"),
        "load_average": metrics.get("load_average"),
    }


def derive(record: dict) -> dict:
    """(Re)computes the plateau numbers and the regime verdict of a record
    from its stored curves and test numbers.

    The plateau is judged on the fixed-seed validation curve where it was
    logged, else on the runner's `val_adv_accuracy`.
    """
    validation, test = record["validation"], record["test"]
    curves = validation["curves"]
    fixed = curves.get("val_adv_fixed_accuracy") or []
    judged = "val_adv_fixed_accuracy" if fixed else "val_adv_accuracy"
    validation.update(
        plateau=plateau(curves["val_adv_accuracy"]),
        plateau_fixed_seed=plateau(fixed) if fixed else None,
        plateau_judged_on=judged,
    )
    config = record["config"]
    decays = config.get("lr_decay_epochs") or () if config.get("lr_schedule") == "piecewise" else ()
    record["regime"] = regime(test["clean_accuracy"], test["autoattack_accuracy"], curves[judged], decays)
    return record


def plot(results_dir: str) -> Optional[str]:
    """Draws `calibration.png` from every record in `results_dir`."""
    records = []
    # Evaluated records, then trained-but-unevaluated and stopped runs
    # (their histories only).
    for sub in ("", "unevaluated", "stopped"):
        folder = os.path.join(results_dir, sub)
        if not os.path.isdir(folder):
            continue
        for fname in sorted(os.listdir(folder)):
            if fname.endswith(".json"):
                with open(os.path.join(folder, fname)) as f:
                    records.append(dict(json.load(f), kind=sub or "evaluated"))
    if not records:
        return None
    datasets = sorted({r["config"]["dataset"] for r in records})
    fig, axes = plt.subplots(len(datasets), 1, figsize=(13, 4.5 * len(datasets)), squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets):
        for r in (r for r in records if r["config"]["dataset"] == dataset):
            curves = r["validation"]["curves"] if r["kind"] == "evaluated" else r["history"]
            curve = 100 * np.asarray(curves["val_adv_accuracy"])
            if r["kind"] == "evaluated":
                t = r["test"]
                label = (f"{r['name']}: test clean {100 * t['clean_accuracy']:.1f}, "
                         f"AA {100 * t['autoattack_accuracy']:.1f}"
                         f"{' (regime)' if r['regime']['met'] else ''}")
            else:
                label = f"{r['name']}: {'no AutoAttack run' if r['kind'] == 'unevaluated' else 'collapsed, stopped'}"
            line, = ax.plot(np.arange(1, len(curve) + 1), curve, label=label)
            fixed = 100 * np.asarray(curves.get("val_adv_fixed_accuracy", []))
            if len(fixed):
                ax.plot(np.arange(1, len(fixed) + 1), fixed, "--", color=line.get_color(),
                        label=f"{r['name']}: same attack seed every epoch")
        ax.set_title(f"{dataset}: validation robust accuracy (PGD-10) per epoch")
        ax.set_xlabel("epoch (solid: new attack seed each epoch, the runner's; dashed: same seed)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = os.path.join(results_dir, "calibration.png")
    save_figure(fig, path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the selected settings that have no record yet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="",
                        help="comma-separated setting names (default: all, in order)")
    parser.add_argument("--results_dir", default=RESULTS_DIR)
    parser.add_argument("--runs_dir", default=RUNS_DIR)
    parser.add_argument("--list", action="store_true", help="print the settings and exit")
    parser.add_argument("--train_only", action="store_true",
                        help="train (or resume) the settings and write their curves to "
                             "<results_dir>/unevaluated/ without the AutoAttack evaluation")
    parser.add_argument("--autoattack_subset", type=int, default=0,
                        help="N > 0: only time AutoAttack-standard on the first N test points of "
                             "the trained settings (written to <results_dir>/subset/)")
    args = parser.parse_args(argv)
    names = [n for n in args.settings.split(",") if n] or list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        print(f"error: unknown setting {unknown[0]!r}; see --list", file=sys.stderr)
        return 2
    if args.list:
        for name in names:
            print(name, SETTINGS[name])
        return 0

    if args.autoattack_subset > 0:
        for name in names:
            setting = SETTINGS[name]
            model_path = os.path.join(args.runs_dir, name, "model.keras")
            out = autoattack_subset(model_path, setting["dataset"], setting["eps"],
                                    args.autoattack_subset)
            write_json(os.path.join(args.results_dir, "subset",
                                    f"{name}_first{args.autoattack_subset}.json"), dict(out, name=name))
            print(name, out, flush=True)
        return 0
    if args.train_only:
        for name in names:
            record = unevaluated(name, train(name, SETTINGS[name], args.runs_dir))
            write_json(os.path.join(args.results_dir, "unevaluated", f"{name}.json"), record)
            plot(args.results_dir)
            t = record["runner_test_pgd20"]
            print(f"{name}: clean {t['clean_accuracy']:.4f} PGD-20 {t['robust_accuracy']:.4f} "
                  f"last-5 span {record['plateau']['span']} (fixed seed "
                  f"{record['plateau_fixed_seed']['span']}) train {record['train_seconds']:.0f}s",
                  flush=True)
        return 0
    for name in names:
        path = os.path.join(args.results_dir, f"{name}.json")
        if os.path.exists(path):
            record = read_json(path, "calibration record")
            if "attack_noise" not in record["validation"]:
                metrics = read_json(os.path.join(args.runs_dir, name, "metrics.json"), "metrics")
                record["validation"]["attack_noise"] = validation_attack_noise(metrics)
            write_json(path, derive(record))
            plot(args.results_dir)
            print(f"{name}: done ({path})")
            continue
        setting = SETTINGS[name]
        metrics = train(name, setting, args.runs_dir)
        report_path = os.path.join(os.path.dirname(metrics["model_path"]), "eval", "report.json")
        if os.path.exists(report_path):
            report = read_json(report_path, "report")
        else:
            report = evaluate_test(metrics["model_path"], setting["dataset"], setting["eps"])
            write_report(report, os.path.dirname(report_path))
        record = summarize(name, setting, metrics, report, validation_attack_noise(metrics))
        write_json(path, record)
        plot(args.results_dir)
        t = record["test"]
        print(f"{name}: clean {t['clean_accuracy']:.4f} PGD-20 {t['pgd20_accuracy']:.4f} "
              f"AA {t['autoattack_accuracy']:.4f} "
              f"last-5 span: runner {record['validation']['plateau']['span']}, fixed seed "
              f"{(record['validation']['plateau_fixed_seed'] or {}).get('span')} "
              f"train {record['train']['train_seconds']:.0f}s eval {t['eval_seconds']:.0f}s "
              f"regime {record['regime']}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
