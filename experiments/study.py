"""The reproduction study's units of work: arms (training settings) x seeds.

A *unit* is one arm trained with one seed and evaluated once:

1. training through the library's one path, `he_keras.runs.run`,
   in `runs/study/<dataset>/<arm>/seed<k>/` (a killed run resumes from its
   last checkpoint; a finished one is loaded, not retrained);
2. evaluation through `he_keras.evaluation.evaluate(..., points=True)` on the
   whole test split (`PROTOCOL` below);
3. `experiments/results/<dataset>/<arm>/seed<k>.json`, written
   atomically. A unit whose JSON exists is never trained or evaluated again.

Every arm of a dataset shares that dataset's `REGIMES` entry (the calibrated
training regime) and differs only in what its claim varies; arms are paired by
seed (same initialisation seed, same validation split and data order).

Workers claim units through lock files, so several can run side by side
(`python experiments/study.py --workers=2`) and a re-run after a kill takes
the unfinished units only.

Usage:
  python experiments/study.py --list
  python experiments/study.py --dataset=digits --arms=pgdat,pgdat_he --workers=2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

RESULTS = os.path.join(HERE, "results")
RUNS = os.path.join(ROOT, "runs", "study")
FORMAT = "he_keras.study/1"

# The calibrated regimes (experiments/results/calibration/, docs/REPRODUCTION.md):
# plain PGD-AT reaches clean >= 90 % and AutoAttack in [25, 85] % there.
REGIMES: dict = {
    "digits": dict(dataset="digits", model="small_cnn", eps=0.2, steps=7, epochs=60,
                   optimizer="adam", lr=2e-3, batch_size=64, lr_schedule="piecewise",
                   lr_decay_epochs=(40, 50), validation_split=0.1),
    # Without a warm-up, eps 0.3 (seed 003's) collapsed to a constant
    # predictor in 3 of 3 calibration runs and eps 0.25, calibrated on seed 0
    # only, in seeds 1 and 2 of the study's plain PGD-AT (those units are in
    # results/superseded/). Growing the training eps from 0 over the
    # first 3 epochs trained seeds 1 and 2 at eps 0.3
    # (results/calibration/unevaluated/mnist5k_e30_s10_ep15_step10-13_warm3_*).
    "mnist5k": dict(dataset="mnist5k", model="small_cnn", eps=0.3, steps=10, epochs=15,
                    eps_warmup_epochs=3, optimizer="adam", lr=1e-3, batch_size=64,
                    lr_schedule="piecewise", lr_decay_epochs=(10, 13), validation_split=0.1),
}
SEEDS = {"digits": 5, "mnist5k": 3}
# Toy sizes for `--quick` (the test suite): a few seconds per unit.
QUICK = dict(epochs=2, lr_schedule="constant", lr_decay_epochs=())
QUICK_SEEDS, QUICK_N_TEST = 3, 40
# The AutoAttack chains' share of AutoAttack's iterations in `--quick` (10
# steps, 500 Square queries): the toy units test the pipeline, not a model.
QUICK_AA_BUDGET = 0.1


@dataclasses.dataclass(frozen=True)
class Arm:
    """One training setting of the study.

    Attributes:
        framework: `he_keras.training.FRAMEWORKS` name.
        head: `"linear"`, `"he"` or `"mhe"`.
        params: `framework_params` of the trainer (e.g. TRADES' beta).
        overrides: Other `TrainConfig` fields that differ from the regime.
        temperatures: 1/T values of standalone Temperature-PGD runs added to
            the evaluation (seed 003 Table 6), on the cosines of HE heads.
        init_arm: Arm whose model (same seed) starts the training
            (`init_model`: fine-tuning); "" for a fresh initialization.
    """

    framework: str
    head: str = "linear"
    params: tuple = ()
    overrides: tuple = ()
    temperatures: tuple = ()
    init_arm: str = ""

    def spec(self, dataset: str, seed: int, quick: bool = False) -> dict:
        """The `TrainConfig` fields of this arm with `seed` (and `init_arm`, see `train_config`)."""
        spec = dict(REGIMES[dataset], framework=self.framework, head=self.head,
                    framework_params=dict(self.params), seed=seed)
        if self.init_arm:
            spec["init_arm"] = self.init_arm
        spec.update(dict(self.overrides))
        if quick:
            full = spec["epochs"]
            spec.update(QUICK)
            if spec.get("eps_warmup_epochs"):  # the same share of the (shorter) run
                spec["eps_warmup_epochs"] *= spec["epochs"] / full
        return spec


# The HE paper's framework settings (Sec. 4): ALP pairing weight 0.5, TRADES beta 6.
FRAMEWORK_PARAMS = {"pgdat": (), "alp": (("beta", 0.5),), "trades": (("beta", 6.0),)}
# Seed 003 Table 6: HE's lead at 1/T = 1, its reversal at 50; PGD-AT is
# weakest at 1/T = 5 (1 and 50 come first: their attack seeds stay fixed).
TEMPERATURES = (1.0, 50.0, 5.0, 10.0)
ARMS: dict[str, Arm] = {}
for _fw, _params in FRAMEWORK_PARAMS.items():
    for _head, _suffix in (("linear", ""), ("he", "_he"), ("mhe", "_mhe")):
        ARMS[_fw + _suffix] = Arm(_fw, _head, _params, temperatures=TEMPERATURES if _fw == "pgdat" else ())
ARMS.update({
    # HAT Table 1: TRADES with a smaller beta.
    "trades_b1": Arm("trades", params=(("beta", 1.0),)),
    # HAT (Algorithm 1; its helper is a standard model of the same seed).
    "hat": Arm("hat", params=(("beta", 2.5), ("gamma", 0.5), ("helper_step", 2.0))),
    # Seed 003 Table 5: HE head without margin, scale schedules.
    "pgdat_he_lis": Arm("pgdat", "he", overrides=(("m", 0.0), ("callbacks", ("he_lis",))),
                        temperatures=TEMPERATURES),
    "pgdat_he_cmp": Arm("pgdat", "he", overrides=(("m", 0.0), ("callbacks", ("he_cmp",))),
                        temperatures=TEMPERATURES),
    # HE paper Sec. 4.1 ablation (no margin): FN only, WN only, FN + WN.
    "pgdat_fn": Arm("pgdat", "he", overrides=(("m", 0.0), ("weight_norm", False))),
    # Without FN the features carry the scale themselves: s = 1 (logits W_n^T f).
    "pgdat_wn": Arm("pgdat", "he", overrides=(("m", 0.0), ("feature_norm", False), ("s", 1.0))),
    "pgdat_fnwn": Arm("pgdat", "he", overrides=(("m", 0.0),)),
    # HE paper Figure 2 (left): HE trained with 3 PGD steps.
    "pgdat_he_k3": Arm("pgdat", "he", overrides=(("steps", 3),)),
    # HE paper Table 9 (TRADES+HE): margin 0 and 0.5, scale 1.
    "trades_he_m0": Arm("trades", "he", FRAMEWORK_PARAMS["trades"], overrides=(("m", 0.0),)),
    "trades_he_m05": Arm("trades", "he", FRAMEWORK_PARAMS["trades"], overrides=(("m", 0.5),)),
    "trades_he_s1": Arm("trades", "he", FRAMEWORK_PARAMS["trades"], overrides=(("s", 1.0),)),
})
# The standard (clean) model of each seed: the source of HAT's initial
# adversarial directions R0 (margin analysis below).
ARMS["standard"] = Arm("standard")
# HAT Sec. 3 / App. B.1: PGD-AT fine-tuning of that standard model (HAT: 25
# epochs after 50 of standard training; here 30 after 60, the regime's
# optimizer with its decays moved to epochs 20 and 25).
ARMS["pgdat_ft"] = Arm("pgdat", init_arm="standard",
                       overrides=(("epochs", 30), ("lr_decay_epochs", (20, 25))))
# HE paper Table 3: FastAT (FGSM from a uniform start, step 1.25 eps, with
# the catastrophic-overfitting early stop) and FreeAT (8 replays, `epochs`
# = the regime's budget) with and without HE.
for _head, _suffix in (("linear", ""), ("he", "_he")):
    ARMS["fastat" + _suffix] = Arm("fastat", _head, overrides=(
        ("steps", 1), ("callbacks", ("fastat_early_stop",))))
    ARMS["freeat" + _suffix] = Arm("freeat", _head, params=(("replays", 8),), overrides=(("steps", 1),))


def unit_path(dataset: str, arm: str, seed: int, results: str = RESULTS) -> str:
    """Where the results JSON of one unit lives."""
    return os.path.join(results, dataset, arm, f"seed{seed}.json")


# === Evaluation protocol ===

PGD20 = "PGD-20"
PGD20_RAW = "PGD-20 (logits/s)"
APGD_DLR = "APGD-DLR"
FGSM = "FGSM"
# HE paper Table 7 (standard model only): PGD-K from a zero start with the
# paper's step (2/255 for eps 8/255: `defaults.probe_step_size`), cross-entropy
# on the logits or on the FN logits.
FN_STEPS = (1, 2)


def fn_pair_names(steps: int) -> tuple[str, str]:
    return f"PGD-{steps} (CE)", f"PGD-{steps} (FN)"
SI_CHAIN = "scale-invariant"
SI_PARTS = ("APGD-T", "FAB-T", "Square")  # AutoAttack-standard after APGD-CE


def temperature_name(inverse_temperature: float) -> str:
    return f"Temperature-PGD 1/T={inverse_temperature:g}"


def protocol(model: Any, arm: Arm, eps: float, seed: int, num_classes: int = 10,
             quick: bool = False) -> list:
    """The attacks of one unit's evaluation, in order.

    PGD-20 on the logits (the papers' column) and, for HE heads, on
    `logits / s`; APGD-DLR (untargeted, scale-invariant); the arm's
    Temperature-PGD runs; FGSM (seed 003's weak attack); for the standard
    model, PGD-1 and PGD-2 with and without FN in the objective (HE paper
    Table 7); the AutoAttack-
    standard chain on the logits and, for HE heads, on `logits / s` (the
    suite's `autoattack_standard`; `quick`: with `QUICK_AA_BUDGET`).
    Standalone attacks added to the protocol after a unit ran are run on its
    saved model later (`supplement`).
    """
    from he_keras.attacks import adaptive, apgd, core
    from he_keras.attacks.core import ProjectedGradientAttack
    from he_keras.defaults import EVAL_PGD_STEPS, pgd_step_size, probe_step_size
    from he_keras.evaluation import SuiteAttack
    from he_keras.evaluation.raw_output import OnFeatureNormalized, OnRawOutput
    from he_keras.evaluation.suite import autoattack_standard

    def named(name: str, attack: Any) -> Any:
        return SuiteAttack(name, attack, attack.config())

    def pgd20(offset: int) -> Any:
        return ProjectedGradientAttack(eps, pgd_step_size(eps, EVAL_PGD_STEPS), EVAL_PGD_STEPS,
                                       keep_best=True, seed=seed + offset)

    attacks = [named(PGD20, pgd20(1))]
    if arm.head != "linear":
        attacks.append(named(PGD20_RAW, OnRawOutput(pgd20(2))))
    attacks.append(named(APGD_DLR, apgd.APGD(eps, loss="dlr", seed=seed + 3)))
    for i, inverse in enumerate(arm.temperatures):
        attacks.append(named(temperature_name(inverse), adaptive.TemperaturePGD(
            eps, pgd_step_size(eps, EVAL_PGD_STEPS), EVAL_PGD_STEPS,
            temperatures=(1.0 / inverse,), seed=seed + 10 + i)))
    attacks.append(named(FGSM, core.fgsm(eps)))
    if arm.framework == "standard":
        for steps in FN_STEPS:
            ce, fn = fn_pair_names(steps)
            step = probe_step_size(eps)
            attacks.append(named(ce, ProjectedGradientAttack(eps, step, steps, random_start="zero")))
            attacks.append(named(fn, OnFeatureNormalized(
                ProjectedGradientAttack(eps, step, steps, random_start="zero"))))
    chains, _ = autoattack_standard(eps, "linf", seed, num_classes, head=arm.head,
                                    budget=QUICK_AA_BUDGET if quick else 1.0)
    return attacks + chains


def scale_invariant(model: Any, x: Any, y: Any, eps: float, seed: int, points: dict,
                    num_classes: int = 10, quick: bool = False) -> dict:
    """Worst case of the scale-invariant attacks only (APGD-DLR, APGD-T, FAB-T, Square).

    The AutoAttack chain runs APGD-T -> FAB-T -> Square on the points APGD-CE
    left; the same chain (fresh seeds) runs here on the points APGD-CE broke,
    so every clean-correct point meets APGD-T -> FAB-T -> Square once. A point
    is robust when it survives that chain and APGD-DLR (`quick`: the chain
    with `QUICK_AA_BUDGET`, as in `protocol`).

    Returns:
        `{"flags": "0101...", "accuracy", "n_extra", "seconds"}`.
    """
    import numpy as np

    from he_keras.evaluation import points as points_lib
    from he_keras.evaluation import run_ensemble
    from he_keras.evaluation.suite import autoattack_standard

    start = time.perf_counter()
    outcomes = points_lib.decode(points)
    bits, clean = outcomes["survivors"], outcomes["clean"]
    after_ce, after_chain = bits[points_lib.AUTOATTACK[0]], points_lib.chain_survivors(points)
    broken_by_ce = clean & ~after_ce
    chain, _ = autoattack_standard(eps, "linf", seed + 100, num_classes,
                                   budget=QUICK_AA_BUDGET if quick else 1.0)
    chain = [a for a in chain if a.name in SI_PARTS]
    robust = after_chain.copy()
    idx = np.flatnonzero(broken_by_ce)
    if len(idx):
        extra = run_ensemble(model, x[idx], y[idx], chain, eps, "linf", 250)
        robust[idx] = extra.robust
    robust &= bits[APGD_DLR]
    return {"flags": points_lib.encode_flags(robust), "accuracy": float(robust.mean()),
            "n_extra": int(len(idx)), "seconds": time.perf_counter() - start}


# === One unit ===

def run_unit(dataset: str, arm_name: str, seed: int, results: str = RESULTS, runs: str = RUNS,
             quick: bool = False, log=print) -> str:
    """Trains (or resumes) and evaluates one unit; returns its JSON path."""
    import keras

    from he_keras import evaluation
    from he_keras.data import load_dataset, to_numpy
    from he_keras.files import write_json
    from he_keras.models.io import load_model
    from he_keras.runs import run

    arm = ARMS[arm_name]
    spec = arm.spec(dataset, seed, quick)
    path = unit_path(dataset, arm_name, seed, results)
    directory = os.path.join(runs, dataset, arm_name, f"seed{seed}")
    n_test = QUICK_N_TEST if quick else 0
    seconds, began = [], {}
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda *_: began.update(t=time.perf_counter()),
        on_epoch_end=lambda *_: seconds.append(time.perf_counter() - began["t"]))
    t0 = time.perf_counter()
    metrics = run(train_config(spec, directory, n_test, runs), extra_callbacks=[timer])
    train_wall = time.perf_counter() - t0
    log(f"  trained {dataset}/{arm_name}/seed{seed} in {train_wall:.0f}s")

    model = load_model(metrics["model_path"])
    x, y = to_numpy(load_dataset(dataset).test, n_test or None)
    t1 = time.perf_counter()
    report = evaluation.evaluate(model, x, y, 10, suite="standard",
                                 attacks=protocol(model, arm, spec["eps"], seed, quick=quick),
                                 eps=spec["eps"], seed=seed, batch_size=250, dataset=dataset,
                                 model_name=f"{arm_name}/seed{seed}", curves=False, points=True)
    si = scale_invariant(model, x, y, spec["eps"], seed, report["points"], quick=quick)
    eval_wall = time.perf_counter() - t1
    history = metrics["history"]
    record = {
        "format": FORMAT, "dataset": dataset, "arm": arm_name, "seed": seed, "quick": quick,
        "arm_definition": dataclasses.asdict(arm), "spec": spec,
        "train": {"history": history, "test_pgd": metrics["test"], "wall_seconds": train_wall,
                  "epoch_seconds": seconds, "validation": metrics.get("validation")},
        "eval": {k: report[k] for k in ("settings", "clean_accuracy", "robust_accuracy", "headline",
                                        "attacks", "checks", "points")},
        "scale_invariant": si,
        "eval_wall_seconds": eval_wall,
        "load_average": os.getloadavg()[0],
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    write_json(path, record)
    head = report["headline"]
    log(f"  {dataset}/{arm_name}/seed{seed}: clean {report['clean_accuracy']:.3f} "
        f"AA {head.get('AutoAttack-standard')} SI {si['accuracy']:.3f} eval {eval_wall:.0f}s")
    keras.backend.clear_session()
    return path


# === Workers ===

_STARTED = time.time()


def log(msg: str) -> None:
    """Flushed progress line with the worker's pid and the wall time."""
    print(f"[study {os.getpid()} {time.time() - _STARTED:6.0f}s] {msg}", flush=True)


_LOCKS: dict = {}


def claim(path: str) -> bool:
    """Takes the lock of a unit: an exclusive `flock` on `<json>.lock`.

    The kernel drops the lock of a killed worker, so a re-run takes its unit
    over; two live workers never hold the same unit.
    """
    import fcntl

    lock = path + ".lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _LOCKS[path] = fd
    return True


def release(path: str) -> None:
    """Drops the lock taken by `claim` (the lock file stays: removing it would race)."""
    import fcntl

    fd = _LOCKS.pop(path, None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def units(dataset: str, arms: Sequence[str], seeds: int) -> list:
    """Units in run order: seed-major, so every arm gets its first seeds first."""
    return [(dataset, arm, seed) for seed in range(seeds) for arm in arms]


def superseded(record: dict, results: str = RESULTS) -> Optional[str]:
    """Why a unit record no longer belongs to the study, or None if it does.

    A record belongs while its arm exists and its training spec equals the
    arm's spec under the current `REGIMES` (a recalibrated regime supersedes
    every unit trained under the old one). A unit that starts from another
    arm's model (`init_arm`) belongs only while that source unit is in
    `results`, belongs itself, and finished before this one (a source that
    finished later was retrained after this unit started from it).
    """
    from he_keras.files import read_json

    arm = ARMS.get(record["arm"])
    if arm is None:
        return f"arm {record['arm']!r} is no longer defined"
    why = spec_change(record["spec"], arm.spec(record["dataset"], record["seed"], record.get("quick", False)))
    if why or not arm.init_arm:
        return why
    name = f"{arm.init_arm}/seed{record['seed']}"
    path = unit_path(record["dataset"], arm.init_arm, record["seed"], results)
    try:
        source = read_json(path, "study unit")
    except (OSError, ValueError):
        if os.path.exists(path):  # unreadable, not retired (by another worker) meanwhile
            raise
        return f"its initial model's unit {name} is no longer in the study"
    source_why = superseded(source, results)
    if source_why:
        return f"its initial model's unit {name} is superseded ({source_why})"
    if source["finished"] > record["finished"]:  # "YYYY-MM-DD HH:MM:SS UTC" sorts by time
        return f"trained from an earlier {name} (that unit finished again at {source['finished']})"
    return None


def spec_change(have: dict, want: dict) -> Optional[str]:
    """How training spec `have` differs from `want` (a missing setting counts
    as its `TrainConfig` default), or None if they are the same."""
    from he_keras.runs import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    have, want = (json.loads(json.dumps(dict(defaults, **spec), default=list)) for spec in (have, want))
    changed = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    if not changed:
        return None
    return "trained with other settings: " + ", ".join(
        f"{k}={have.get(k)!r} (now {want.get(k)!r})" for k in changed)


def retire(path: str, results: str = RESULTS) -> str:
    """Moves a superseded unit JSON to `<results>/superseded/<dataset>/<arm>/`, keeping it."""
    from he_keras.files import read_json

    rel = os.path.relpath(path, results)
    finished = read_json(path, "study unit").get("finished", "")  # "2026-12-03 00:01:56 UTC"
    stamp = "".join(c for c in finished if c.isdigit()) or "unknown"
    target = os.path.join(results, "superseded", os.path.splitext(rel)[0] + f".{stamp}.json")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(path, target)
    return target


def retire_superseded(dataset: str, arm: str, seed: int, results: str = RESULTS, runs: str = RUNS,
                      quick: bool = False, log=print) -> None:
    """Moves aside what an earlier regime left of a unit, so the unit runs anew.

    A unit JSON that `superseded` rejects goes to `superseded/` (`retire`)
    and its run directory, whose finished checkpoint a resume would only
    evaluate again, is renamed `<run>.superseded-<time>`; so are the JSON and
    run directory of every unit started from its model (arms whose `init_arm`
    it is), unless a live worker holds that unit. A run directory without a
    unit JSON that the runner would refuse to resume (an unfinished run of
    other settings) is renamed too.
    """
    from he_keras.files import read_json
    from he_keras.runs.config import check_run_dir

    path = unit_path(dataset, arm, seed, results)
    if not claim(path):
        return
    try:
        run_dir = _run_dir(runs, dataset, arm, seed)
        if os.path.exists(path):
            why = superseded(read_json(path, "study unit"), results)
            if why:
                _retire_unit(dataset, arm, seed, why, results, runs, log)
                for derived in (name for name, a in ARMS.items() if a.init_arm == arm):
                    derived_path = unit_path(dataset, derived, seed, results)
                    if claim(derived_path):
                        try:
                            _retire_unit(dataset, derived, seed, f"it started from the retired {arm}/seed{seed}",
                                         results, runs, log)
                        finally:
                            release(derived_path)
        if not os.path.exists(path) and os.path.isdir(run_dir):
            try:
                check_run_dir(train_config(ARMS[arm].spec(dataset, seed, quick), run_dir, 0, runs))
            except ValueError as err:
                _move_aside(run_dir, f"{dataset}/{arm}/seed{seed}: {err}", log)
    finally:
        release(path)


def _retire_unit(dataset: str, arm: str, seed: int, why: str, results: str, runs: str, log) -> None:
    """Retires a unit's JSON (if any) and moves its run directory (if any) aside; the caller holds its lock."""
    path = unit_path(dataset, arm, seed, results)
    if os.path.exists(path):
        log(f"  {dataset}/{arm}/seed{seed}: {why}; moved to {retire(path, results)}")
    run_dir = _run_dir(runs, dataset, arm, seed)
    if os.path.isdir(run_dir):
        _move_aside(run_dir, f"{dataset}/{arm}/seed{seed}: its model belongs to the retired unit", log)


def _move_aside(run_dir: str, why: str, log) -> None:
    moved = run_dir.rstrip("/") + time.strftime(".superseded-%Y%m%d-%H%M%S")
    os.replace(run_dir, moved)
    log(f"  {why}; moved to {moved}")


def one_thread() -> None:
    """Runs TensorFlow ops on one thread (one worker per core), unless this
    process has already started TensorFlow (the tests), which keeps its threads."""
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # "cannot be modified after initialization"
        pass


def work(todo: Sequence[tuple], results: str = RESULTS, runs: str = RUNS, quick: bool = False,
         log=print) -> int:
    """Runs every unfinished, unclaimed unit of `todo`; returns how many it ran."""
    one_thread()
    done = 0
    for dataset, arm, seed in todo:
        path = unit_path(dataset, arm, seed, results)
        if ARMS[arm].init_arm:  # first: retiring a stale source also retires what started from it
            retire_superseded(dataset, ARMS[arm].init_arm, seed, results, runs, quick, log)
        retire_superseded(dataset, arm, seed, results, runs, quick, log)
        if complete(path, results):
            continue
        if not claim(path):
            continue
        try:
            init_arm = ARMS[arm].init_arm
            if not os.path.exists(path) and init_arm:
                source = unit_path(dataset, init_arm, seed, results)
                if not (os.path.exists(source) and regenerate(source, runs, results, log)):
                    log(f"  {dataset}/{arm}/seed{seed}: waits for {init_arm}/seed{seed}")
                    continue
            if not os.path.exists(path):
                run_unit(dataset, arm, seed, results, runs, quick, log)
                done += 1
            if missing_attacks(path):
                supplement(path, runs, results, log)
            if margins_missing(path, results):
                # Under the standard unit's lock: two margin arms of a seed
                # must not retrain its standard model into one directory at once.
                standard = unit_path(dataset, "standard", seed, results)
                if claim(standard):
                    try:
                        if regenerate(path, runs, results, log) and regenerate(standard, runs, results, log):
                            add_margins(path, runs, log)
                    finally:
                        release(standard)
            if weight_norms_missing(path) and regenerate(path, runs, results, log):
                add_weight_norms(path, runs, log)
            if corruptions_missing(path):
                add_corruptions(path, runs, log)
        finally:
            release(path)
    return done


def complete(path: str, results: str = RESULTS) -> bool:
    """Whether the unit JSON at `path` exists with every attack and analysis it can have now."""
    return os.path.exists(path) and not (missing_attacks(path) or margins_missing(path, results)
                                         or weight_norms_missing(path) or corruptions_missing(path))


def pending(todo: Sequence[tuple], results: str = RESULTS) -> list:
    """The units of `todo` that `work` would change: incomplete (`complete`) or superseded."""
    from he_keras.files import read_json

    left = []
    for dataset, arm, seed in todo:
        path = unit_path(dataset, arm, seed, results)
        if not complete(path, results) or superseded(read_json(path, "study unit"), results):
            left.append((dataset, arm, seed))
    return left


def train_config(spec: dict, output_dir: str, n_eval: int, runs: str) -> Any:
    """The `TrainConfig` of a unit's spec (JSON lists back to tuples; `init_arm`
    becomes the `init_model` path of that arm's model in `runs`)."""
    from he_keras.runs import TrainConfig

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
    init_arm = fields.pop("init_arm", "")
    if init_arm:
        fields["init_model"] = os.path.join(_run_dir(runs, spec["dataset"], init_arm, spec["seed"]), "model.keras")
    return TrainConfig(**fields, output_dir=output_dir, n_eval=n_eval, tensorboard=False, verbose=0)


def regenerate(path: str, runs: str = RUNS, results: str = RESULTS, log=print) -> bool:
    """Makes a finished unit's model available here, retraining it if `runs/` lacks it.

    `runs/` is not committed, so a fresh clone has the units' JSONs but not
    their models. Training is deterministic (same spec, seed and data
    order), so the unit is retrained and accepted only if every epoch of
    the new history equals the recorded one; otherwise the new model is
    deleted and False returned (analyses that need it stay missing).
    """
    import shutil

    from he_keras.files import read_json

    record = read_json(path, "study unit")
    directory = _run_dir(runs, record["dataset"], record["arm"], record["seed"])
    if os.path.exists(os.path.join(directory, "model.keras")):
        return True
    start = time.perf_counter()
    init_arm = record["spec"].get("init_arm")
    if init_arm and not regenerate(unit_path(record["dataset"], init_arm, record["seed"], results), runs, results,
                                   log):
        return False
    same = train_again(record, directory, runs) == 0.0
    name = f"{record['dataset']}/{record['arm']}/seed{record['seed']}"
    if not same:
        shutil.rmtree(directory, ignore_errors=True)
        log(f"  {name}: retrained model does not repeat the unit's history; not used")
        return False
    log(f"  {name}: model retrained, history identical ({time.perf_counter() - start:.0f}s)")
    return True


def train_again(record: dict, directory: str, runs: str = RUNS) -> float:
    """Trains a unit's spec and seed into `directory` again.

    Returns:
        0.0 if the new per-epoch history equals the unit's recorded one
        element for element (as a deterministic runner on the same code and
        machine gives), else the largest absolute difference between them
        (inf if they do not have the same entries or a value is not finite).
    """
    import numpy as np

    from he_keras.runs import run

    n_eval = QUICK_N_TEST if record["quick"] else 0
    history = run(train_config(record["spec"], directory, n_eval, runs))["history"]
    recorded = record["train"]["history"]
    pairs = [(np.asarray(history.get(k, []), np.float64), np.asarray(v, np.float64)) for k, v in recorded.items()]
    if set(history) != set(recorded) or any(a.shape != b.shape for a, b in pairs):
        return float("inf")
    if all(np.array_equal(a, b) for a, b in pairs):
        return 0.0
    difference = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in pairs)
    return difference if np.isfinite(difference) and difference > 0 else float("inf")


# === Margins along adversarial directions (HAT, Sec. 3 and Table 1) ===

MARGIN_ARMS = ("pgdat", "pgdat_ft", "trades", "trades_b1", "hat")
MARGIN_EPOCHS = (1, 5)  # R1, R5: the unit's own PGD directions after epochs 1 and 5
MARGIN_CAP = 10.0  # L2 units; digits images have 64 pixels in [0, 1] (norm <= 8)
MARGIN_PRECISION = 0.1


def _run_dir(runs: str, dataset: str, arm: str, seed: int) -> str:
    return os.path.join(runs, dataset, arm, f"seed{seed}")


def margins_missing(path: str, results: str = RESULTS) -> bool:
    """Whether a finished unit of `MARGIN_ARMS` lacks margins that its seed's standard unit allows."""
    from he_keras.files import read_json

    record = read_json(path, "study unit")
    if record["arm"] not in MARGIN_ARMS or "margins" in record:
        return False
    return os.path.exists(unit_path(record["dataset"], "standard", record["seed"], results))


def add_margins(path: str, runs: str = RUNS, log=print) -> None:
    """Per-point margins of a unit's model along R0, R1 and R5 (HAT's Fig. 4 and Table 1).

    R0: the PGD directions (own predictions as labels, `margin.direction_attack`)
    of the standard model of the same seed; Rk: those of the unit's own model
    after epoch k, recovered by replaying its first epochs (the runner is
    deterministic: the replay's per-epoch history must equal the unit's, or R1
    and R5 are not recorded). Margin = distance along the unit direction until
    the final model's prediction changes (`margin.margins_along`), capped at
    `MARGIN_CAP`; points whose direction is zero get NaN. `initial` holds the
    standard model's margins along the same directions: the "before" of
    HAT's Fig. 4, which fine-tunes a standard model (units here train from
    scratch, so the standard model of the same seed stands in for it).
    """
    import shutil
    import tempfile

    import keras
    import numpy as np

    from he_keras.data import load_dataset, to_numpy
    from he_keras.evaluation import margin as margin_lib
    from he_keras.files import read_json, write_json
    from he_keras.models.io import load_model
    from he_keras.runs import run

    start = time.perf_counter()
    record = read_json(path, "study unit")
    dataset, arm, seed, spec = record["dataset"], record["arm"], record["seed"], record["spec"]
    model = load_model(os.path.join(_run_dir(runs, dataset, arm, seed), "model.keras"))
    x, _ = to_numpy(load_dataset(dataset).test, len(record["eval"]["points"]["clean"]))
    attack = margin_lib.direction_attack(spec["eps"], seed=seed + 200)  # recorded; the same in each call below
    sources = {"R0": load_model(os.path.join(_run_dir(runs, dataset, "standard", seed), "model.keras"))}
    # Replay the first epochs with snapshots (the same spec, seed and data order).
    replay_dir = tempfile.mkdtemp(prefix="replay-", dir=_run_dir(runs, dataset, arm, seed))
    snapshots: dict = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 in epochs:
                snapshots[epoch + 1] = [w.copy() for w in self.model.classifier.get_weights()]

    epochs = [e for e in MARGIN_EPOCHS if e <= spec["epochs"]]
    replay_spec = dict(spec, epochs=max(epochs))
    if replay_spec.get("lr_decay_epochs") and min(replay_spec["lr_decay_epochs"]) >= max(epochs):
        replay_spec.update(lr_schedule="constant", lr_decay_epochs=())  # the same rate before the first decay
    try:
        replay = run(train_config(replay_spec, replay_dir, 32, runs), extra_callbacks=[Snapshot()])
    finally:
        shutil.rmtree(replay_dir, ignore_errors=True)
    unit_curve = record["train"]["history"]["val_adv_accuracy"][:max(epochs)]
    replay_curve = replay["history"]["val_adv_accuracy"]
    faithful = np.allclose(unit_curve, replay_curve, atol=1e-6)
    if faithful:
        for epoch, weights in snapshots.items():
            snapshot = keras.models.clone_model(model)
            snapshot.set_weights(weights)
            sources[f"R{epoch}"] = snapshot
    def along(classifier, directions) -> list:
        values = margin_lib.margins_along(classifier, x, directions, MARGIN_CAP, MARGIN_PRECISION, 250)
        return [None if not np.isfinite(v) else round(float(v), 4) for v in values]

    margins, initial = {}, {}
    for name, source in sources.items():
        directions = margin_lib.adversarial_directions(source, x, spec["eps"], seed=seed + 200,
                                                        batch_size=250)
        margins[name] = along(model, directions)
        initial[name] = along(sources["R0"], directions)
    record["margins"] = {
        **margins, "initial": initial, "cap": MARGIN_CAP, "precision": MARGIN_PRECISION, "pgd": attack.config(),
        "replay_matches_unit": bool(faithful), "replay_curve": replay_curve,
        "seconds": time.perf_counter() - start,
    }
    write_json(path, record)
    log(f"  {dataset}/{arm}/seed{seed}: margins {sorted(margins)} (replay faithful: {faithful})")


# === Norms of the classifier's class weights (seed 003, Sec. 3.2) ===

WEIGHT_NORM_ARMS = ("pgdat",)


def weight_norms_missing(path: str) -> bool:
    """Whether a finished unit of `WEIGHT_NORM_ARMS` lacks its class weight norms."""
    from he_keras.files import read_json

    record = read_json(path, "study unit")
    return record["arm"] in WEIGHT_NORM_ARMS and "class_weight_norms" not in record


def add_weight_norms(path: str, runs: str = RUNS, log=print) -> None:
    """L2 norm of each class's weight vector in the unit's linear head (seed 003, Figure 4)."""
    import numpy as np

    from he_keras.files import read_json, write_json
    from he_keras.models.io import load_model

    record = read_json(path, "study unit")
    dataset, arm, seed = record["dataset"], record["arm"], record["seed"]
    model = load_model(os.path.join(_run_dir(runs, dataset, arm, seed), "model.keras"))
    kernel = np.asarray(model.layers[-1].kernel)  # (features, classes)
    record["class_weight_norms"] = [round(float(v), 6) for v in np.linalg.norm(kernel, axis=0)]
    write_json(path, record)
    log(f"  {dataset}/{arm}/seed{seed}: class weight norms added")


# === Common corruptions (HE paper, Table 5) ===

CORRUPTION_ARMS = ("pgdat", "pgdat_he", "alp", "alp_he", "trades", "trades_he", "freeat", "freeat_he")
CORRUPTION_SEED = 0  # one seed for every unit: each arm meets the same corrupted images


def corruptions_missing(path: str) -> bool:
    """Whether a finished unit of `CORRUPTION_ARMS` lacks its corruption benchmark.

    A benchmark is also missing when it ran another set of corruptions than
    the ones that now apply to its images (`select_corruptions`), or
    predates the record of its image shape.
    """
    from he_keras.evaluation.corruptions import select_corruptions
    from he_keras.files import read_json

    record = read_json(path, "study unit")
    if record["arm"] not in CORRUPTION_ARMS:
        return False
    done = record.get("corruptions")
    if done is None or "image_shape" not in done:
        return True
    names, _ = select_corruptions("generated", record["dataset"], image_shape=done["image_shape"])
    return set(names) != set(done["accuracy"])


def add_corruptions(path: str, runs: str = RUNS, log=print) -> None:
    """Accuracy of a unit's model on its test points under the generated corruptions.

    Every applicable corruption at severities 1-5, seeded with
    `CORRUPTION_SEED` (`he_keras.evaluation.corruption_benchmark`), on the
    points of the unit's evaluation; the record keeps the accuracy grid, mCA
    and, per point, the number of benchmark configurations it survives (the
    per-point outcome `mCA` of the claims).

    Without the unit's model in `runs/`, the unit's spec and seed are
    trained again (`train_again`) into `<run dir>.retrained`, which is kept
    (outside git, like `runs/`) with its `provenance.json`, so that a changed
    benchmark runs again on the same model instead of another retraining. A
    retraining that repeats the unit's history is the unit's model; one that
    does not (a unit trained by an earlier version of the code) is a model
    of the same arm, seed and data order. `corruptions.model` records which,
    with the largest history difference: the mCA claims pair arms by seed,
    whichever model a seed has.
    """
    import shutil

    import numpy as np

    from he_keras.data import load_dataset, to_numpy
    from he_keras.evaluation import corruption_benchmark
    from he_keras.files import read_json, write_json
    from he_keras.models.io import load_model

    record = read_json(path, "study unit")
    dataset, arm, seed = record["dataset"], record["arm"], record["seed"]
    directory = _run_dir(runs, dataset, arm, seed)
    provenance = {"retrained": False, "history_max_difference": 0.0}
    if not os.path.exists(os.path.join(directory, "model.keras")):
        directory = directory.rstrip("/") + ".retrained"
        kept = os.path.join(directory, "provenance.json")
        if os.path.exists(kept):
            provenance = read_json(kept, "retraining provenance")
            log(f"  {dataset}/{arm}/seed{seed}: corruptions on the kept retraining")
        else:
            # The caller holds the unit's lock: a directory without its
            # provenance is a retraining a killed worker left; start afresh.
            shutil.rmtree(directory, ignore_errors=True)
            start = time.perf_counter()
            difference = train_again(record, directory, runs)
            provenance = {"retrained": True, "history_max_difference": difference,
                          "train_seconds": time.perf_counter() - start}
            write_json(kept, provenance)
            log(f"  {dataset}/{arm}/seed{seed}: retrained for the corruptions, history "
                + ("identical" if difference == 0.0 else f"differs by up to {difference:.3g}"))
    model = load_model(os.path.join(directory, "model.keras"))
    x, y = to_numpy(load_dataset(dataset).test, QUICK_N_TEST if record["quick"] else None)
    if not np.array_equal(y, record["eval"]["points"]["labels"]):
        raise ValueError(f"{dataset}/{arm}/seed{seed}: the test points differ from the unit's evaluation")
    result = corruption_benchmark(model, x, y, seed=CORRUPTION_SEED, batch_size=500, dataset=dataset,
                                  model_name=f"{arm}/seed{seed}", per_point=True)
    record["corruptions"] = {k: result[k] for k in (
        "seed", "severities", "not_applicable", "held_out", "clean_accuracy", "accuracy",
        "per_corruption", "mCA", "held_out_mCA", "point_correct", "point_configs", "seconds")}
    record["corruptions"]["image_shape"] = list(x.shape[1:])
    record["corruptions"]["model"] = provenance
    write_json(path, record)
    log(f"  {dataset}/{arm}/seed{seed}: corruptions mCA {result['mCA']:.4f} ({result['seconds']:.0f}s)")


def missing_attacks(path: str) -> list:
    """Standalone attacks of the current protocol that a finished unit has not run."""
    from he_keras.files import read_json

    record = read_json(path, "study unit")
    have = set(record["eval"]["points"]["survivors"])
    attacks = protocol(None, ARMS[record["arm"]], record["spec"]["eps"], record["seed"],
                       quick=record.get("quick", False))
    return [a for a in attacks if a.chain is None and a.name not in have]


def supplement(path: str, runs: str = RUNS, results: str = RESULTS, log=print) -> bool:
    """Runs the `missing_attacks` of a finished unit on its saved model and merges them.

    A model not on this machine (`runs/` is not committed) is retrained by
    `regenerate`; if that fails to repeat the unit, returns False and changes
    nothing: the unit then lacks those metrics, and claims that need them
    stay pending.
    """
    from he_keras.data import load_dataset, to_numpy
    from he_keras.evaluation import run_ensemble
    from he_keras.files import read_json, write_json
    from he_keras.models.io import load_model

    record = read_json(path, "study unit")
    dataset, arm, seed = record["dataset"], record["arm"], record["seed"]
    model_path = os.path.join(runs, dataset, arm, f"seed{seed}", "model.keras")
    if not regenerate(path, runs, results, log):
        log(f"  {dataset}/{arm}/seed{seed}: model not here, cannot add {[a.name for a in missing_attacks(path)]}")
        return False
    todo = missing_attacks(path)
    start = time.perf_counter()
    model = load_model(model_path)
    points = record["eval"]["points"]
    x, y = to_numpy(load_dataset(dataset).test, len(points["clean"]))
    result = run_ensemble(model, x, y, todo, record["spec"]["eps"], "linf", 250)
    clean = points_lib.encode_flags(result.clean_correct)
    if clean != points["clean"] or [int(v) for v in y] != points["labels"]:
        raise ValueError(f"{path}: the saved model or test points differ from the unit's evaluation")
    for attack in result.attacks:
        points["survivors"][attack.name] = points_lib.encode_flags(attack.survivors)
        record["eval"]["attacks"].append(attack.to_json())
    record.setdefault("supplements", []).append({
        "attacks": [a.name for a in todo], "seconds": time.perf_counter() - start,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
    write_json(path, record)
    log(f"  {dataset}/{arm}/seed{seed}: added {[a.name for a in todo]}")
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=sorted(REGIMES))
    p.add_argument("--arms", default="", help="comma-separated arm names (default: all)")
    p.add_argument("--seeds", type=int, default=0, help="seeds (default: the dataset's)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--quick", action="store_true", help="toy sizes, for the tests")
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--runs", default=RUNS)
    p.add_argument("--list", action="store_true", help="list arms and finished units")
    args = p.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a] or list(ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        print(f"error: unknown arm(s) {unknown}; known: {sorted(ARMS)}", file=sys.stderr)
        return 2
    seeds = args.seeds or (QUICK_SEEDS if args.quick else SEEDS[args.dataset])
    todo = units(args.dataset, arms, seeds)
    if args.list:
        for dataset, arm, seed in todo:
            state = "done" if os.path.exists(unit_path(dataset, arm, seed, args.results)) else "todo"
            print(f"{dataset}/{arm}/seed{seed}: {state}")
        return 0
    return run_workers(todo, args.results, args.runs, args.quick, args.workers)


def run_workers(todo: Sequence[tuple], results: str = RESULTS, runs: str = RUNS, quick: bool = False,
                workers: int = 1, meanwhile: Optional[Callable] = None) -> int:
    """Runs `todo` in `workers` spawned processes (in this one for 1); returns an exit code.

    With `workers` > 1, no more processes are spawned than units are
    `pending` (a spawned worker pays a TensorFlow import before it finds out
    there is nothing to do), and the pending units go to spawned workers,
    not to this process, whose TensorFlow may already run on more than one
    thread (a retrained model must repeat its unit's one-thread history bit
    for bit); with `workers` = 1 this process runs them, on one thread only
    if it has not started TensorFlow yet (`one_thread`).
    `meanwhile()`, if given, runs in this process while the workers run (the
    quick study times its steps then: toy timings decide nothing).
    """
    if workers <= 1:
        if meanwhile is not None:
            meanwhile()
        work(todo, results, runs, quick, log)
        return 0
    import multiprocessing

    workers = min(workers, len(pending(todo, results)))
    procs = []
    if workers:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=work, args=(todo, results, runs, quick, log)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    if meanwhile is not None:
        meanwhile()
    for proc in procs:
        proc.join()
    failed = [proc.exitcode for proc in procs if proc.exitcode]
    if failed:
        raise RuntimeError(f"study workers failed with exit codes {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
