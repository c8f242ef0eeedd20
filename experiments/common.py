"""Shared machinery of the reproduction experiments.

Every experiment script builds on four pieces:

- `parse_args`: the flags every script takes (`--dataset`, `--model`,
  `--seeds`, `--epochs`, `--n-train`, `--n-eval`, `--quick`, `--out`), so the
  small-scale run on mnist5k / digits and a full-scale CIFAR-10 run are the
  same command with other values;
- `train`: trains (or loads from the cache) one model described by a spec
  dict — the fields of `he_keras.training.runner.TrainConfig` plus
  `warm_epochs` (clean epochs before adversarial training). Models are cached
  under `<out>/models/<hash of the spec>/` so experiments share them (the
  PGD-AT / TRADES models of Table 2 serve the class-wise and HAT
  experiments);
- `evaluate`: clean accuracy and the accuracy under each named attack (each
  attack runs on every clean-correct point, the per-point worst case is kept
  too), and AutoAttack-standard when it is requested and available;
- `save_result` / `summarize`: per-seed JSON and mean ± std over seeds.

An attack or framework that is not (yet) in the library is reported as
`"not run: <missing piece>"`, never replaced by a stand-in.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from he_keras import losses  # noqa: E402
from he_keras.attacks.core import ProjectedGradientAttack  # noqa: E402
from he_keras.data import batches, load_dataset, to_numpy  # noqa: E402
from he_keras.evaluation.ensemble import SuiteAttack, run_ensemble  # noqa: E402
from he_keras.models import find_head, head_kind  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results")
# Bump to invalidate every cached model (changes of the training loop).
CACHE_VERSION = 1

# Attack names used across the experiments (display names in the report).
PGD20 = "PGD-20"
PGD20_COS = "PGD-20 (raw cos)"
APGD_CE = "APGD-CE"
APGD_DLR = "APGD-DLR"
CW = "CW-Linf"
HE_ADAPTIVE = "HE-adaptive"
TEMPERATURE = "Temperature-PGD"
AUTOATTACK = "AutoAttack"


# === Flags ===


def parse_args(
    description: str,
    dataset: str,
    model: str,
    argv: Optional[Sequence[str]] = None,
    seeds: int = 3,
) -> argparse.Namespace:
    """The flags every experiment takes.

    Args:
        description: Shown by `--help`.
        dataset: Default dataset of the small-scale run.
        model: Default model.
        argv: Arguments (None: `sys.argv`).
        seeds: Default number of seeds.

    Returns:
        The parsed namespace; `--quick` shrinks every size to a toy run.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", default=dataset, help="digits, mnist5k, cifar10, ...")
    p.add_argument("--model", default=model, help="small_cnn, trades_cnn, wide_resnet, ...")
    p.add_argument("--seeds", type=int, default=seeds, help="number of seeds (0, 1, ...)")
    p.add_argument("--epochs", type=int, default=0, help="adversarial epochs (0: script default)")
    p.add_argument("--warm-epochs", type=int, default=-1, help="clean warm-up epochs (-1: default)")
    p.add_argument("--n-train", type=int, default=-1, help="training images (0: all, -1: default)")
    p.add_argument("--n-eval", type=int, default=0, help="test images evaluated (0: default)")
    p.add_argument("--eps", type=float, default=0.0, help="L-inf radius (0: dataset default)")
    p.add_argument("--batch-size", type=int, default=0, help="batch size (0: default)")
    p.add_argument("--quick", action="store_true", help="toy sizes (minutes), for the tests")
    p.add_argument("--out", default=DEFAULT_OUT, help="results directory")
    return p.parse_args(argv)


# Per-dataset defaults: eps of the threat model and the small-scale budget.
DATASET_EPS = {"digits": 0.3, "mnist5k": 0.3, "mnist": 0.3, "cifar10": 8 / 255,
               "cifar100": 8 / 255, "svhn_cropped": 8 / 255}


def sizes(args: argparse.Namespace, epochs: int, n_train: int, n_eval: int,
          warm_epochs: int = 1, batch_size: int = 64) -> dict:
    """Resolves the run sizes: flags > quick toy sizes > script defaults."""
    if args.quick:
        epochs, n_train, n_eval, warm_epochs = 1, 128, 32, min(warm_epochs, 1)
    return {
        "epochs": args.epochs or epochs,
        "n_train": n_train if args.n_train < 0 else args.n_train,
        "n_eval": args.n_eval or n_eval,
        "warm_epochs": warm_epochs if args.warm_epochs < 0 else args.warm_epochs,
        "eps": args.eps or DATASET_EPS.get(args.dataset, 0.3),
        "seeds": 1 if args.quick else args.seeds,
        "batch_size": args.batch_size or batch_size,
    }


# === Time budget ===

# `run_all.py` sets this (seconds since the epoch): an experiment starts a new
# seed only if, at the pace of the seeds it already ran, it ends before it.
DEADLINE_ENV = "HE_EXPERIMENT_DEADLINE"


def seed_loop(sz: dict, log: Callable = print):
    """Yields seeds 0..seeds-1; stops early when the next would overrun the budget.

    Seed 0 always runs. `sz["seeds_run"]` holds how many seeds completed, so
    the results state it next to the planned `sz["seeds"]`.
    """
    deadline = float(os.environ.get(DEADLINE_ENV, "inf"))
    start = time.time()
    sz["seeds_run"] = 0
    for seed in range(sz["seeds"]):
        if seed > 0:
            per_seed = (time.time() - start) / seed
            if time.time() + per_seed > deadline:
                log(f"time budget: stopping after {seed} of {sz['seeds']} seeds "
                    f"({per_seed:.0f}s per seed)")
                return
        yield seed
        sz["seeds_run"] = seed + 1


# === Data ===


@functools.lru_cache(maxsize=None)
def dataset(name: str):
    """The `he_keras.data.Dataset` (cached per process)."""
    return load_dataset(name)


@functools.lru_cache(maxsize=None)
def test_arrays(name: str, n: int) -> tuple:
    """The first `n` test images and labels (a fixed subset)."""
    return to_numpy(dataset(name).test, n or None)


# === Training with a model cache ===


def spec_key(spec: dict) -> str:
    """Stable short hash of a training spec (the cache key)."""
    payload = json.dumps({"v": CACHE_VERSION, **spec}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:14]


def base_spec(args_sizes: dict, args: argparse.Namespace, **overrides: Any) -> dict:
    """A training spec with the experiment's defaults and `overrides`."""
    eps = args_sizes["eps"]
    spec = {
        "dataset": args.dataset,
        "model": args.model,
        "head": "linear",
        "s": 15.0,
        "m": -1.0,
        "feature_norm": True,
        "weight_norm": True,
        "framework": "pgdat",
        "eps": eps,
        "steps": 3,
        "step_size": 0.0,  # 0: 2.5 * eps / steps
        "random_start": "",
        "framework_params": {},
        "epochs": args_sizes["epochs"],
        "warm_epochs": args_sizes["warm_epochs"],
        "n_train": args_sizes["n_train"],
        "batch_size": args_sizes["batch_size"],
        "optimizer": "adam",
        "lr": 1e-3,
        "lr_schedule": "constant",
        "callbacks": [],
        "seed": 0,
    }
    spec.update(overrides)
    return spec


def _config(spec: dict, output_dir: str):
    from he_keras.training.runner import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {k: v for k, v in spec.items() if k in fields}
    if not kwargs.get("step_size"):
        kwargs["step_size"] = 2.5 * spec["eps"] / spec["steps"]
    kwargs["callbacks"] = tuple(spec.get("callbacks", ()))
    return TrainConfig(**kwargs, output_dir=output_dir, verbose=0, resume=False)


def missing_framework(spec: dict) -> Optional[str]:
    """Why a spec cannot be trained yet (a framework or callback missing)."""
    from he_keras.training import CALLBACKS, FRAMEWORKS

    if spec["framework"] not in FRAMEWORKS:
        return f"framework {spec['framework']!r} not in he_keras.training.FRAMEWORKS"
    if spec.get("warm_epochs") and "standard" not in FRAMEWORKS:
        return "framework 'standard' (warm start) not in he_keras.training.FRAMEWORKS"
    for name in spec.get("callbacks", ()):
        if name not in CALLBACKS:
            return f"callback {name!r} not in he_keras.training.CALLBACKS"
    return None


def load_classifier(path: str) -> keras.Model:
    """Loads a cached classifier (he_keras layers are registered)."""
    import he_keras.layers  # noqa: F401  (registers the HE heads)

    return keras.saving.load_model(path, compile=False)


def train(spec: dict, out: str, log: Callable = print) -> tuple[keras.Model, dict]:
    """Trains the model of `spec` or loads it from the cache.

    The loop is `he_keras.training.runner.run` without checkpoints: build the
    framework trainer from a `TrainConfig`, optionally warm up the classifier
    with `warm_epochs` of clean training (the `standard` framework), then
    `epochs` of the framework (FreeAT: `ceil(epochs / replays)` passes).

    Args:
        spec: Training spec (see `base_spec`).
        out: Results directory; the cache lives in `<out>/models/`.
        log: Printer for progress lines.

    Returns:
        `(classifier, info)` with `info` holding the spec, history and the
        wall-clock seconds of the adversarial phase and of the warm-up.
    """
    from he_keras.training import FRAMEWORKS
    from he_keras.training.runner import build_trainer, make_callbacks, make_optimizer

    key = spec_key(spec)
    directory = os.path.join(out, "models", key)
    model_path = os.path.join(directory, "model.keras")
    info_path = os.path.join(directory, "info.json")
    if os.path.exists(model_path) and os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
        return load_classifier(model_path), info
    why = missing_framework(spec)
    if why:
        raise MissingPiece(why)
    config = _config(spec, directory)
    config.validate()
    keras.utils.set_random_seed(spec["seed"])
    data = dataset(spec["dataset"])
    train_split = data.train.take(spec["n_train"]) if spec["n_train"] else data.train
    n_train = int(train_split.reduce(0, lambda n, _: n + 1))
    steps_per_epoch = int(math.ceil(n_train / spec["batch_size"]))
    trainer = build_trainer(config, data)
    trainer.compile(optimizer=make_optimizer(config, steps_per_epoch))
    trainer.build((None, *data.input_shape))
    warm_seconds = 0.0
    if spec.get("warm_epochs"):
        started = time.perf_counter()
        warm = FRAMEWORKS["standard"](
            trainer.classifier, eps=spec["eps"], margin=trainer.margin, seed=spec["seed"]
        )
        warm.compile(optimizer=keras.optimizers.Adam(spec["lr"]))
        for epoch in range(spec["warm_epochs"]):
            warm.fit(
                batches(train_split, spec["batch_size"], shuffle=True, augment=data.augment,
                        seed=spec["seed"] * 7919 + epoch),
                verbose=0,
            )
        warm_seconds = time.perf_counter() - started
    epochs = spec["epochs"]
    replays = spec.get("framework_params", {}).get("replays")
    if spec["framework"] == "freeat" and replays:
        epochs = max(1, int(math.ceil(epochs / replays)))
    callbacks = make_callbacks(config, trainer, data)
    history: dict = {}
    epoch_seconds = []
    started = time.perf_counter()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        result = trainer.fit(
            batches(train_split, spec["batch_size"], shuffle=True, augment=data.augment,
                    seed=spec["seed"] * 100_003 + epoch),
            initial_epoch=epoch, epochs=epoch + 1, callbacks=callbacks, verbose=0,
        )
        epoch_seconds.append(time.perf_counter() - t0)
        for k, v in result.history.items():
            history.setdefault(k, []).extend(float(x) for x in v)
        if trainer.stop_training:
            break
    seconds = time.perf_counter() - started
    info = {
        "spec": spec,
        "key": key,
        "n_train": n_train,
        "passes": epochs,
        "history": history,
        "train_seconds": seconds,
        # Tracing-free estimate: the median epoch (the first one compiles).
        "steady_train_seconds": float(np.median(epoch_seconds[1:] or epoch_seconds))
        * len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "warm_seconds": warm_seconds,
        "framework_class": type(trainer).__name__,
        "margin": trainer.margin,
    }
    os.makedirs(directory, exist_ok=True)
    trainer.classifier.save(model_path)
    with open(info_path, "w") as f:
        json.dump(info, f, indent=1, default=_jsonable)
    last = {k: round(v[-1], 3) for k, v in history.items()}
    log(f"  trained {spec['framework']}/{spec['head']} seed {spec['seed']} "
        f"in {seconds:.0f}s (+{warm_seconds:.0f}s warm): {last}")
    return trainer.classifier, info


class MissingPiece(RuntimeError):
    """A framework, callback or attack the experiment needs is not in the library."""


# === Attacks ===


def head_scale(model: keras.Model) -> float:
    """The HE scale `s` of a model (1.0 for a linear head)."""
    head = find_head(model)
    return 1.0 if head is None else float(np.asarray(head.scale))


def _construct(cls: Any, **kwargs: Any) -> Any:
    """Calls `cls` with the keyword arguments its signature accepts."""
    params = inspect.signature(cls).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return cls(**kwargs)
    return cls(**{k: v for k, v in kwargs.items() if k in params})


def pgd(eps: float, steps: int, seed: int, objective: Any = "ce", **kw: Any) -> ProjectedGradientAttack:
    """Evaluation PGD: uniform start, step `2.5 eps / steps`, best iterate."""
    return ProjectedGradientAttack(
        eps=eps, step_size=2.5 * eps / steps, steps=steps, random_start="uniform",
        objective=objective, keep_best=True, seed=seed, **kw,
    )


def make_attack(name: str, model: keras.Model, eps: float, seed: int,
                budget: dict) -> Any:
    """The attack `name` for `model` (raises `MissingPiece` if not available).

    Args:
        name: One of the attack names of this module.
        model: The attacked classifier (its head gives `s` and `m`).
        eps: L-inf radius.
        seed: Seed of the random starts.
        budget: Iterations: `pgd_steps`, `apgd_iters`, `cw_steps`,
            `temperature` (the inverse temperature 1/T), `margin` (m of the
            model for HE-adaptive).

    Returns:
        An object with `attack(model, x, y)` or a callable.
    """
    steps = budget.get("pgd_steps", 20)
    if name == PGD20:
        return pgd(eps, steps, seed)
    if name == PGD20_COS:
        scale = head_scale(model)
        return pgd(eps, steps, seed, objective=lambda y, z, ref: losses.cross_entropy(y, z / scale))
    if name in (APGD_CE, APGD_DLR):
        try:
            from he_keras.attacks.apgd import APGD
        except ImportError as err:
            raise MissingPiece("he_keras.attacks.apgd.APGD") from err
        return _construct(APGD, eps=eps, loss="ce" if name == APGD_CE else "dlr",
                          steps=budget.get("apgd_iters", 100), seed=seed)
    if name == CW:
        try:
            from he_keras.attacks.cw import CWLinf
        except ImportError as err:
            raise MissingPiece("he_keras.attacks.cw.CWLinf") from err
        cw_steps = budget.get("cw_steps", 30)
        return CWLinf(eps=eps, step_size=2.5 * eps / cw_steps, steps=cw_steps, seed=seed)
    if name.startswith(TEMPERATURE):
        try:
            from he_keras.attacks.adaptive import TemperaturePGD
        except ImportError as err:
            raise MissingPiece("he_keras.attacks.adaptive.TemperaturePGD") from err
        # "Temperature-PGD 1/T=50" runs that 1/T; plain "Temperature-PGD" the
        # per-point worst case over the budget's `inverse_temperatures`.
        if "1/T=" in name:
            inv = (float(name.split("1/T=")[1]),)
        else:
            inv = tuple(budget.get("inverse_temperatures", (10.0, 50.0)))
        return TemperaturePGD(eps=eps, step_size=2.5 * eps / steps, steps=steps,
                              temperatures=tuple(1.0 / t for t in inv), seed=seed)
    if name == HE_ADAPTIVE:
        try:
            from he_keras.attacks.adaptive import HEAdaptivePGD
        except ImportError as err:
            raise MissingPiece("he_keras.attacks.adaptive.HEAdaptivePGD") from err
        # The paper's adaptive attack: PGD on the HE training loss with s and m
        # (CE, raw-cosine CE and DLR are separate columns of the tables).
        return HEAdaptivePGD(eps=eps, step_size=2.5 * eps / steps, steps=steps,
                             margin=budget.get("margin", 0.0), objectives=("margin_ce",),
                             seed=seed)
    raise ValueError(f"Unknown attack {name!r}")


def autoattack_suite(model: keras.Model, eps: float, seed: int, budget: dict) -> list:
    """AutoAttack-standard as `SuiteAttack`s: APGD-CE -> APGD-T -> FAB-T -> Square.

    Built from the library's attacks with AutoAttack's standard settings,
    unless `budget` reduces them (`aa_apgd_iters`, `aa_targets`,
    `aa_fab_iters`, `aa_square_queries`; the defaults are the standard 100 /
    9 / 100 / 5000). Raises `MissingPiece` if an attack is not in the library.
    """
    try:
        from he_keras.attacks.apgd import APGD, APGDTargeted
    except ImportError as err:
        raise MissingPiece("he_keras.attacks.apgd (APGD, APGDTargeted)") from err
    try:
        from he_keras.attacks.square import Square
    except ImportError as err:
        raise MissingPiece("he_keras.attacks.square.Square") from err
    try:
        from he_keras.attacks.fab import FABTargeted
    except ImportError as err:
        raise MissingPiece("he_keras.attacks.fab.FABTargeted (FAB-T)") from err
    iters = budget.get("aa_apgd_iters", 100)
    targets = budget.get("aa_targets", 9)
    fab_iters = budget.get("aa_fab_iters", 100)
    queries = budget.get("aa_square_queries", 5000)
    parts = [
        ("APGD-CE", _construct(APGD, eps=eps, loss="ce", steps=iters, seed=seed)),
        ("APGD-T", _construct(APGDTargeted, eps=eps, steps=iters, n_target_classes=targets,
                              seed=seed)),
        ("FAB-T", _construct(FABTargeted, eps=eps, steps=fab_iters, n_iter=fab_iters,
                             n_target_classes=targets, seed=seed)),
        ("Square", _construct(Square, eps=eps, n_queries=queries, seed=seed)),
    ]
    out = []
    for name, attack in parts:
        config = attack.config() if hasattr(attack, "config") else {}
        out.append(SuiteAttack(name, attack, config, standalone=False,
                               kind="black-box" if name == "Square" else "white-box"))
    return out


def autoattack_label(budget: dict) -> str:
    """How the AutoAttack of a run was configured (for the report)."""
    std = {"aa_apgd_iters": 100, "aa_targets": 9, "aa_fab_iters": 100, "aa_square_queries": 5000}
    if all(budget.get(k, v) == v for k, v in std.items()):
        return "AutoAttack-standard (APGD-CE 100, APGD-T 9x100, FAB-T 9x100, Square 5000)"
    return ("AutoAttack-standard composition at reduced budget (APGD-CE {a}, APGD-T {t}x{a}, "
            "FAB-T {t}x{f}, Square {q} queries)").format(
        a=budget.get("aa_apgd_iters", 100), t=budget.get("aa_targets", 9),
        f=budget.get("aa_fab_iters", 100), q=budget.get("aa_square_queries", 5000))


def evaluate(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    attacks: Sequence[str],
    seed: int = 0,
    budget: Optional[dict] = None,
    autoattack: bool = False,
    log: Callable = print,
) -> dict:
    """Clean accuracy, each attack's own accuracy and their worst case.

    Every attack runs on every clean-correct point (its accuracy is exact);
    `worst_case` is the per-point worst case over the attacks that ran.
    AutoAttack-standard (if requested) runs as its own ensemble (each attack
    on the points its predecessors left), so its number is the AutoAttack
    number; `worst_case_all` adds it to the worst case.

    Returns:
        `{"n", "clean", "attacks": {name: acc or "not run: ..."},
        "worst_case", "autoattack", "worst_case_all", "seconds": {...}}`.
    """
    budget = dict(budget or {})
    budget.setdefault("margin", 0.0)
    specs, out = [], {"n": int(len(x)), "attacks": {}, "seconds": {}}
    for name in attacks:
        if name == HE_ADAPTIVE and head_kind(model) == "linear":
            out["attacks"][name] = "n/a (linear head: the HE loss is CE = PGD-20)"
            continue
        try:
            specs.append(SuiteAttack(name, make_attack(name, model, eps, seed, budget), {}))
        except MissingPiece as err:
            out["attacks"][name] = f"not run: {err} missing"
    result = run_ensemble(model, x, y, specs, eps, "linf", batch_size=budget.get("batch", 250))
    out["clean"] = result.clean_accuracy
    for r in result.attacks:
        out["attacks"][r.name] = r.accuracy
        out["seconds"][r.name] = r.seconds
    out["worst_case"] = result.robust_accuracy if specs else None
    robust = result.robust.copy()
    if autoattack:
        try:
            suite = autoattack_suite(model, eps, seed, budget)
            started = time.perf_counter()
            # AutoAttack's first attack is APGD-CE: when the same APGD-CE (same
            # iterations and seed) already ran on every clean-correct point,
            # its result is reused and the rest of the suite runs on the points
            # it left robust — the same per-point bookkeeping, one run fewer.
            apgd = next((r for r in result.attacks if r.name == APGD_CE), None)
            reuse = apgd is not None and budget.get("apgd_iters", 100) == budget.get("aa_apgd_iters", 100)
            if reuse:
                keep = np.flatnonzero(apgd.correct)
                aa_robust = np.zeros(len(x), bool)
                cumulative = [{"name": "APGD-CE", "cumulative": float(apgd.correct.mean()),
                               "config": suite[0].config, "seconds": apgd.seconds,
                               "reused": True}]
                if len(keep):
                    rest = run_ensemble(model, x[keep], y[keep], suite[1:], eps, "linf",
                                        batch_size=budget.get("batch", 250))
                    aa_robust[keep] = rest.robust
                    cumulative += [{"name": r.name, "cumulative": float(r.cumulative_accuracy * len(keep) / len(x)),
                                    "config": r.config, "seconds": r.seconds} for r in rest.attacks]
                out["autoattack"] = float(aa_robust.mean())
                out["autoattack_attacks"] = cumulative
                out["seconds"][AUTOATTACK] = time.perf_counter() - started
                out["autoattack_label"] = autoattack_label(budget)
                robust &= aa_robust
                out["worst_case_all"] = float(robust.mean())
                out["_result"] = result
                return out
            aa = run_ensemble(model, x, y, suite, eps, "linf", batch_size=budget.get("batch", 250))
            out["autoattack"] = aa.robust_accuracy
            out["seconds"][AUTOATTACK] = time.perf_counter() - started
            out["autoattack_label"] = autoattack_label(budget)
            out["autoattack_attacks"] = [
                {"name": r.name, "cumulative": r.cumulative_accuracy, "config": r.config,
                 "seconds": r.seconds}
                for r in aa.attacks
            ]
            robust &= aa.robust
        except MissingPiece as err:
            out["autoattack"] = f"not run: {err} missing"
    out["worst_case_all"] = float(robust.mean())
    out["_result"] = result  # dropped before saving
    return out


# === Results ===


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


def clean_for_json(obj: Any) -> Any:
    """Drops private keys (`_result`) recursively."""
    if isinstance(obj, dict):
        return {k: clean_for_json(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [clean_for_json(v) for v in obj]
    return obj


def save_json(path: str, payload: Any) -> None:
    """Writes JSON atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(clean_for_json(payload), f, indent=1, sort_keys=True, default=_jsonable)
    os.replace(tmp, path)


def mean_std(values: Sequence[Any]) -> dict:
    """Mean ± std (population std over seeds, ddof=0 for n=1) of the numbers.

    Non-numbers ("not run: ...") are passed through as `note`.
    """
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    notes = [v for v in values if isinstance(v, str)]
    if not nums:
        return {"mean": None, "std": None, "n": 0, "note": notes[0] if notes else "not run"}
    return {"mean": float(np.mean(nums)), "std": float(np.std(nums, ddof=1)) if len(nums) > 1 else 0.0,
            "n": len(nums), "values": nums}


def run_header(name: str, args: argparse.Namespace, sz: dict) -> dict:
    """The settings block written at the top of every result JSON."""
    return {
        "experiment": name,
        "dataset": args.dataset,
        "model": args.model,
        "quick": bool(args.quick),
        "sizes": sz,
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "argv": sys.argv[1:],
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def logger(name: str) -> Callable:
    """A flushed printer prefixed with the experiment name and wall time."""
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{name} {time.perf_counter() - start:6.0f}s] {msg}", flush=True)

    return log


def savefig(fig: Any, path: str) -> None:
    """Saves a matplotlib figure (PNG, 110 dpi) and closes it."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot with the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def flat_metrics(ev: dict) -> dict:
    """`{"clean", <attack>..., "AutoAttack"}` from an `evaluate` result."""
    out = {"clean": ev["clean"], **ev["attacks"]}
    if "autoattack" in ev:
        out[AUTOATTACK] = ev["autoattack"]
    return out


def summarize(runs: Sequence[dict]) -> dict:
    """Mean ± std over seeds of every metric, per `group` of the runs.

    Each run is `{"group": str, "seed": int, "metrics": {name: value}}` or
    `{"group", "seed", "error": "not run: ..."}`.
    """
    groups: dict = {}
    for r in runs:
        groups.setdefault(r["group"], []).append(r)
    summary = {}
    for group, rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        names = []
        for r in ok:
            names += [k for k in r["metrics"] if k not in names]
        row = {k: mean_std([r["metrics"].get(k) for r in ok]) for k in names}
        if not ok:
            row["error"] = rs[0]["error"]
        summary[group] = row
    return summary


def train_and_eval(spec: dict, args, sz: dict, attacks: Sequence[str], budget: dict,
                   autoattack: bool, log: Callable, group: str, extra: Optional[dict] = None,
                   keep_result: bool = False) -> dict:
    """Trains (cached) and evaluates one spec; returns a run record."""
    record = {"group": group, "seed": spec["seed"], **(extra or {})}
    try:
        model, info = train(spec, args.out, log)
    except MissingPiece as err:
        record["error"] = f"not run: {err} missing"
        log(record["error"])
        return record
    x, y = test_arrays(args.dataset, sz["n_eval"])
    ev = evaluate(model, x, y, sz["eps"], attacks, seed=spec["seed"],
                  budget={**budget, "margin": info["margin"]}, autoattack=autoattack, log=log)
    result = ev.pop("_result")
    record["metrics"] = flat_metrics(ev)
    record["metrics"]["train_seconds"] = info["train_seconds"]
    record["metrics"]["steady_train_seconds"] = info.get("steady_train_seconds", info["train_seconds"])
    record["model_key"] = info["key"]
    record["n_eval"] = ev["n"]
    if "autoattack_label" in ev:
        record["autoattack_label"] = ev["autoattack_label"]
    if keep_result:
        record["_result"] = result
        record["_model"] = model
    log(f"{group} seed {spec['seed']}: " + ", ".join(
        f"{k}={v if isinstance(v, str) else round(v, 3)}" for k, v in record["metrics"].items()))
    return record


# Toy attack iterations of `--quick`.
QUICK_BUDGET = {"pgd_steps": 5, "apgd_iters": 5, "cw_steps": 5, "aa_apgd_iters": 5,
                "aa_targets": 2, "aa_fab_iters": 5, "aa_square_queries": 20}


def attack_budget(budget: dict, quick: bool) -> dict:
    """An experiment's attack budget, shrunk to toy iterations with `--quick`."""
    return {**budget, **QUICK_BUDGET} if quick else dict(budget)


def run_grid(name: str, args: argparse.Namespace, sz: dict, budget: dict,
             runs_of_seed: Callable[[int], list], figure: Callable[[dict, str], None],
             log: Callable, extra: Any = None) -> str:
    """Runs every seed the time budget allows and writes `<name>.json` / `.png`.

    Args:
        name: Experiment name (file stem).
        args: The parsed flags.
        sz: The resolved sizes.
        budget: The attack budget (written into the JSON).
        runs_of_seed: `seed -> list of run records` (see `summarize`).
        figure: `(summary, png_path) -> None`.
        log: Printer.
        extra: A dict, or a callable `runs -> dict`, merged into the JSON.

    Returns:
        The JSON path. The JSON and the figure are rewritten after every seed,
        so a run stopped by its time budget still leaves its results.
    """
    runs: list = []

    def save() -> str:
        summary = summarize(runs)
        more = extra(runs) if callable(extra) else (extra or {})
        payload = {**run_header(name, args, sz), "budget": budget, **more,
                   "summary": summary, "runs": runs}
        path = os.path.join(args.out, f"{name}.json")
        save_json(path, payload)
        figure(summary, os.path.join(args.out, f"{name}.png"))
        return path

    for seed in seed_loop(sz, log):
        runs.extend(runs_of_seed(seed))
        save()
    path = save()
    log(f"wrote {path}")
    return path
