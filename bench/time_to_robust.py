"""Time to a robust model: `apps/train.py` against a plain PyTorch loop, end to end.

Trains a recipe with validation off on its whole training split, once per seed
through the user's path (`apps/train.py` in a fresh process, `train_seconds`
from its metrics.json: the whole `fit`, tracing included) and once through
`torch_twin.py`, the same recipe as a plain eager PyTorch loop on the same
arrays (run with `--torch_python`, default this interpreter; skipped with a
message when torch is not installed there). The two sides alternate which
goes first from one seed to the next. Then both models are evaluated by
he-keras: clean accuracy and AutoAttack-standard (one chain, on the logits)
at the recipe's eps on the test split. Recipes (`--recipe`):

- `quickstart` (`configs/quickstart.cfg`): digits (1,437 training images),
  small CNN + HE head s = 15, m = 0.2, PGD-7 at eps 0.3 step 0.075, Adam
  2e-3, batch 64, 30 epochs;
- `mnist5k`: the reproduction study's MNIST regime (`experiments.arms.REGIMES`)
  with its PGD-AT+HE arm: 5,000 real MNIST digits (4,000 for training),
  small CNN + HE head, PGD-10 at eps 0.3 step 0.075 with eps warm-up over 3
  epochs, Adam 1e-3 decayed x0.1 after epochs 10 and 13, batch 64, 15 epochs.

Prints, per seed and as medians: training seconds of each side, the ratio
PyTorch / he-keras (above 1: he-keras is faster) with a 95 % bootstrap
interval over the pairs (`experiments.stats.ratio_interval`, the study's
paired-timing statistic; absolute times drift, so take many pairs), process
wall times, and clean and AutoAttack accuracy per side; `--output` writes
them as JSON, after every seed's runs (the models go to `--models_dir`).
`--evaluate=<that JSON>` trains nothing: it evaluates the models of an earlier
`--noautoattack` run (AutoAttack takes minutes per model and need not share
the idle machine the timing needs), adds each model's accuracies to that file
as soon as they are measured, so a killed evaluation rerun with the same
command goes on with the models not yet evaluated, and reports that run's
times with them. Run
it on an otherwise idle machine: absolute times swing between runs, the
ratio of interleaved runs much less. Flags after `--` go to `apps/train.py`
(every he-keras arm); `--lever` adds an arm with more flags (e.g.
`--lever=--steps_per_execution=23`, interleaved with the rest), `--torch_lever`
a PyTorch arm with more twin flags (`--torch_lever=--autocast`, the
counterpart of `--lever=--precision=mixed_bfloat16`); every he-keras arm's
ratio is given against every PyTorch arm. A recipe setting
given there (e.g. `-- --epochs=2`) changes both sides.

Usage (from the repository root):
  python bench/time_to_robust.py --seeds=0,1,2 --output=/tmp/time_to_robust.json
  python bench/time_to_robust.py --recipe=mnist5k --noautoattack --output=/tmp/m.json \
      --models_dir=/tmp/m_models
  python bench/time_to_robust.py --recipe=mnist5k --evaluate=/tmp/m.json  # AutoAttack later
      # (rerun the same command after a kill: models already evaluated are kept)
  python bench/time_to_robust.py --torch_python=/path/to/venv/bin/python \
      --lever=--precision=mixed_bfloat16 --torch_lever=--autocast
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

from absl import app, flags

_RECIPE = flags.DEFINE_enum("recipe", "quickstart", ["quickstart", "mnist5k"], "Recipe to train.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, one pair of runs each.")
_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python", sys.executable, "Python interpreter with torch for the PyTorch twin."
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "Optional JSON file for the results, rewritten after every seed's runs.")
_MODELS_DIR = flags.DEFINE_string(
    "models_dir", None, "New or empty directory for the trained models and the training split "
                        "(default: a new temporary directory); keep it to --evaluate the models in a "
                        "later session.")
_LEVERS = flags.DEFINE_multi_string(
    "lever", [], "apps/train.py flags and NAME=value environment variables (space-separated) of "
                 "one more he-keras arm, interleaved with the others; repeatable, e.g. "
                 "--lever=--steps_per_execution=23 --lever=TF_ENABLE_ONEDNN_OPTS=1.",
)
_TORCH_LEVERS = flags.DEFINE_multi_string(
    "torch_lever", [], "torch_twin.py flags (space-separated) of one more PyTorch arm, interleaved "
                       "with the others; repeatable, e.g. --torch_lever=--autocast.",
)
_AUTOATTACK = flags.DEFINE_boolean(
    "autoattack", True, "Evaluate every model with AutoAttack-standard (minutes per model).")
_EVALUATE = flags.DEFINE_string(
    "evaluate", None, "Train nothing: evaluate the models of an earlier run's --output JSON "
                      "(with the same --recipe), adding each model's accuracies to that file as "
                      "they are measured (a killed evaluation continues where it stopped), and "
                      "report its times with the accuracies.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "quickstart.cfg")
TRAIN_FLAGS = ["--validation_split=0", "--notensorboard", "--verbose=0"]
# The recipe's settings the twin takes as arguments (the rest are its defaults).
TWIN_SETTINGS = ("epochs", "batch_size", "lr", "eps", "step_size", "steps", "s", "m",
                 "eps_warmup_epochs", "lr_decay_epochs", "lr_decay_factor")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def recipe_settings(recipe: str) -> dict:
    """The recipe's `apps/train.py` settings, as `name: value` strings."""
    from he_keras.defaults import margin_of, pgd_step_size
    from he_keras.runs.config import TrainConfig

    settings = {}
    if recipe == "quickstart":
        with open(RECIPE) as f:
            for line in f:
                if line.startswith("--"):
                    name, _, value = line[2:].strip().partition("=")
                    settings[name] = value
        settings.pop("output_dir")
    else:
        from experiments import arms

        spec = arms.ARMS["pgdat_he"].spec(recipe, seed=0)
        spec.pop("framework_params")
        spec.pop("validation_split")
        spec.pop("seed")
        settings = {name: ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
                    for name, value in spec.items()}
    defaults = TrainConfig()
    settings.setdefault("s", str(defaults.s))
    settings.setdefault("m", str(margin_of(settings["head"], defaults.m)))
    settings.setdefault("step_size", str(pgd_step_size(float(settings["eps"]), int(settings["steps"]))))
    settings.setdefault("eps_warmup_epochs", str(defaults.eps_warmup_epochs))
    settings.setdefault("lr_decay_epochs", "")
    settings.setdefault("lr_decay_factor", str(defaults.lr_decay_factor))
    return settings


def run(command: list, env: Optional[dict] = None) -> tuple[str, float]:
    """Runs a command from the repository root (`env` added to the environment);
    its stdout and wall seconds."""
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**ENV, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.time() - started


def keras_run(seed: int, out: str, settings: dict, extra: list) -> dict:
    """`apps/train.py` with the recipe's settings and `extra` flags (`NAME=value`
    items set environment variables); its training seconds and process wall time."""
    directory = os.path.join(out, f"keras-{seed}")
    env = dict(item.split("=", 1) for item in extra if not item.startswith("--"))
    args = [item for item in extra if item.startswith("--")]
    recipe = [f"--{name}={value}" for name, value in settings.items() if name != "seed"]
    _, wall = run([sys.executable, "apps/train.py", *recipe, *TRAIN_FLAGS,
                   f"--seed={seed}", f"--output_dir={directory}", *args], env)
    with open(os.path.join(directory, "metrics.json")) as f:
        metrics = json.load(f)
    return {"train_seconds": metrics["train_seconds"], "wall_seconds": wall,
            # None from a checkout before `fit_times` (e.g. --lever=PYTHONPATH=<old checkout>).
            "epoch_seconds": (metrics.get("fit_times") or {}).get("epoch_seconds"),
            "model": os.path.join(directory, "model.keras")}


def torch_run(seed: int, out: str, data: str, settings: dict, extra: list) -> dict:
    """The PyTorch twin with `extra` flags; its training seconds and process wall time."""
    os.makedirs(out, exist_ok=True)
    weights = os.path.join(out, f"torch-{seed}.npz")
    args = [f"--{name}={settings[name]}" for name in TWIN_SETTINGS] + extra
    stdout, wall = run([_TORCH_PYTHON.value, "bench/torch_twin.py", f"--data={data}",
                        f"--output={weights}", f"--seed={seed}", *args])
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall_seconds": wall, "weights": weights}


def robustness(model, x, y, settings: dict, seed: int) -> dict:
    """Clean and AutoAttack-standard accuracy (one chain, on the logits)."""
    from he_keras.evaluation import evaluate
    from he_keras.evaluation.presets import autoattack_standard

    eps = float(settings["eps"])
    attacks, _ = autoattack_standard(eps, "linf", seed, 10, head="linear")
    report = evaluate(model, x, y, 10, attacks=attacks, eps=eps, seed=seed, curves=False)
    return {"clean_accuracy": report["clean_accuracy"],
            "autoattack": report["headline"]["AutoAttack-standard"]}


def steady_epoch(run: dict) -> Optional[float]:
    """Median seconds of a run's epochs after the first (None with one epoch)."""
    epochs = run.get("epoch_seconds") or []
    return statistics.median(epochs[1:]) if len(epochs) > 1 else None


def torch_available() -> bool:
    done = subprocess.run([_TORCH_PYTHON.value, "-c", "import torch"], capture_output=True)
    return done.returncode == 0


def train_arms(settings: dict, extra: list, x_train, y_train) -> tuple[dict, list, list]:
    """Trains every arm once per seed, interleaved; `(arms, runs, load averages)`.

    With `--output`, the results so far are written after every seed's runs.
    """
    import numpy as np

    seeds = [int(s) for s in _SEEDS.value]
    twin = torch_available()
    if not twin:
        print(f"skipped the PyTorch twin: torch is not installed for {_TORCH_PYTHON.value} "
              "(pass --torch_python=<a python with torch>)")
    out = _MODELS_DIR.value or tempfile.mkdtemp(prefix="time_to_robust-")
    os.makedirs(out, exist_ok=True)
    split = os.path.join(out, "split.npz")
    np.savez(split, x_train=x_train, y_train=y_train)
    arms = {"he-keras": extra}
    for lever in _LEVERS.value:
        arms[f"he-keras {lever}"] = extra + lever.split()
    torch_arms = (
        {"PyTorch": [], **{f"PyTorch {lever}": lever.split() for lever in _TORCH_LEVERS.value}}
        if twin else {}
    )
    arms.update(torch_arms)
    names = list(arms)
    load = [os.getloadavg()[0]]
    runs = []
    for index, seed in enumerate(seeds):
        # Each seed rotates which arm goes first.
        order = names[index % len(names):] + names[: index % len(names)]
        row = {"seed": seed, "order": order}
        for name in order:
            if name in torch_arms:
                row[name] = torch_run(seed, os.path.join(out, str(names.index(name))), split, settings,
                                      torch_arms[name])
            else:
                row[name] = keras_run(seed, os.path.join(out, str(names.index(name))), settings, arms[name])
            print(f"  seed {seed} {name}: {row[name]['train_seconds']:.1f} s", flush=True)
        runs.append(row)
        load.append(os.getloadavg()[0])
        if _OUTPUT.value:
            write_results(_OUTPUT.value, settings, arms, load, runs)
    return arms, runs, load


def write_results(path: str, settings: dict, arms: dict, load: list, runs: list,
                  summary: Optional[dict] = None) -> None:
    """Writes the run's results to `path` atomically (with `summary`, the medians
    and ratios, when there is one)."""
    from he_keras.files import write_json

    write_json(path, {"recipe": _RECIPE.value, "settings": settings, "arms": arms, "load_average": load,
                      "runs": runs, **({"summary": summary} if summary is not None else {})})


def evaluate_arms(names: list, runs: list, settings: dict, input_shape: tuple, x_test, y_test,
                  save: Callable[[], None]) -> None:
    """Adds clean and AutoAttack accuracy to every run of `runs` (in place) that
    has none yet, calling `save()` after each."""
    import keras
    import numpy as np

    from he_keras.models import build_model

    for row in runs:
        for name in names:
            if "autoattack" in row[name]:  # measured before the evaluation was stopped
                continue
            if "weights" in row[name]:  # a PyTorch arm
                model = build_model(settings["model"], input_shape, 10, head="he", s=float(settings["s"]))
                weights = np.load(row[name]["weights"])
                model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
            else:
                model = keras.saving.load_model(row[name]["model"])
            row[name].update(robustness(model, x_test, y_test, settings, row["seed"]))
            save()
            print(f"  seed {row['seed']} {name}: clean {100 * row[name]['clean_accuracy']:.1f} %, "
                  f"AutoAttack {100 * row[name]['autoattack']:.1f} %", flush=True)


def fail(message: str) -> None:
    """Ends the benchmark with one `error:` line and exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    extra = list(argv[1:])
    models = _MODELS_DIR.value
    if models and not _EVALUATE.value and os.path.isdir(models) and os.listdir(models):
        # apps/train.py would resume the runs there and time nothing.
        fail(f"--models_dir={models} is not empty; give a new or empty directory")
    sys.path.insert(0, ROOT)
    from experiments import stats

    settings = recipe_settings(_RECIPE.value)
    # A recipe setting given after `--` changes both sides (e.g. --epochs=2 for a smoke run).
    for arg in extra:
        name, _, value = arg[2:].partition("=")
        if arg.startswith("--") and name in settings:
            settings[name] = value
    from he_keras.data import load_dataset, to_numpy

    data = load_dataset(settings["dataset"])
    x_train, y_train = to_numpy(data.train)
    x_test, y_test = to_numpy(data.test)
    if _EVALUATE.value:
        from he_keras.files import read_json

        earlier = read_json(_EVALUATE.value, "time_to_robust results")
        if (earlier.get("recipe"), earlier.get("settings")) != (_RECIPE.value, settings):
            fail(f"{_EVALUATE.value} holds a run of recipe {earlier.get('recipe')!r} with settings "
                 f"{earlier.get('settings')}; now {_RECIPE.value!r} with {settings}")
        arms, runs, load = earlier["arms"], earlier["runs"], earlier["load_average"]
        timing = earlier.get("summary")
    else:
        arms, runs, load = train_arms(settings, extra, x_train, y_train)
        timing = None
    names = list(arms)
    evaluated = _AUTOATTACK.value or bool(_EVALUATE.value)
    # The file each model's accuracies are added to as they are measured.
    results = _EVALUATE.value or _OUTPUT.value
    if evaluated:
        evaluate_arms(names, runs, settings, data.input_shape, x_test, y_test,
                      lambda: results and write_results(results, settings, arms, load, runs, timing))
    print(f"{_RECIPE.value} recipe, {len(x_train)} training images, validation off, seeds "
          f"{[r['seed'] for r in runs]}; load average {min(load):.2f}-{max(load):.2f}")
    summary = {}
    torch_names = [name for name in names if "weights" in runs[0][name]]
    for name in names:
        seconds = [r[name]["train_seconds"] for r in runs]
        summary[name] = {
            "train_seconds": statistics.median(seconds),
            "wall_seconds": statistics.median(r[name]["wall_seconds"] for r in runs),
        }
        line = (f"  {name}: training {' / '.join(f'{v:.1f}' for v in seconds)} s (median "
                f"{summary[name]['train_seconds']:.1f}), process {summary[name]['wall_seconds']:.1f} s")
        steady = [steady_epoch(r[name]) for r in runs]
        if None not in steady:
            # What the run spends beyond its epochs at their steady pace: tracing,
            # the first epoch's warm-up, checkpoints, data set-up.
            fixed = [r[name]["train_seconds"] - len(r[name]["epoch_seconds"]) * e for r, e in zip(runs, steady)]
            summary[name].update(steady_epoch_seconds=statistics.median(steady),
                                 fixed_seconds=statistics.median(fixed))
            line += (f"; epochs after the first {statistics.median(steady):.3f} s (median), beyond them "
                     f"{' / '.join(f'{v:.1f}' for v in fixed)} s")
        if evaluated:
            summary[name].update(clean_accuracy=[r[name]["clean_accuracy"] for r in runs],
                                 autoattack=[r[name]["autoattack"] for r in runs])
            line += (f"; clean {' / '.join(f'{100 * v:.1f}' for v in summary[name]['clean_accuracy'])} %, "
                     f"AutoAttack {' / '.join(f'{100 * v:.1f}' for v in summary[name]['autoattack'])} %")
        # Intervals need two pairs or more.
        for torch_name in torch_names if name not in torch_names and len(runs) > 1 else ():
            ratios = [r[torch_name]["train_seconds"] / r[name]["train_seconds"] for r in runs]
            summary[name].setdefault("pytorch_over_this", {})[torch_name] = ratios
            # The study's paired-timing statistic: median ratio, bootstrap over pairs.
            interval = stats.ratio_interval([r[torch_name]["train_seconds"] for r in runs], seconds)
            summary[name].setdefault("ratio_interval", {})[torch_name] = interval
            line += (f"; {torch_name} / this: {' / '.join(f'{v:.2f}' for v in ratios)} "
                     f"(median {interval['ratio']:.2f}, 95 % interval {interval['ci_low']:.2f}-"
                     f"{interval['ci_high']:.2f})")
            if None not in steady and all(steady_epoch(r[torch_name]) for r in runs):
                # The ratio with every cost beyond the steady epochs taken away.
                pace = stats.ratio_interval([steady_epoch(r[torch_name]) for r in runs], steady)
                summary[name].setdefault("steady_ratio_interval", {})[torch_name] = pace
                line += (f"; steady epochs {torch_name} / this: median {pace['ratio']:.2f} "
                         f"(95 % interval {pace['ci_low']:.2f}-{pace['ci_high']:.2f})")
        print(line)
    for path in {results, _OUTPUT.value} - {None}:
        write_results(path, settings, arms, load, runs, summary)


if __name__ == "__main__":
    app.run(main)
