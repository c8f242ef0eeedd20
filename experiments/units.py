"""One unit end to end: train (or resume), evaluate, record; retrain and supplement.

1. Training goes through the library's one path, `he_keras.runs.run`, in
   `runs/study/<dataset>/<arm>/seed<k>/` (a killed run resumes from its
   last checkpoint; a finished one is loaded, not retrained).
2. Evaluation goes through `he_keras.evaluation.evaluate(..., points=True)`
   on the whole test split (`experiments.protocol`).
3. The record is `experiments/results/<dataset>/<arm>/seed<k>.json`,
   written atomically. A unit whose JSON exists is never trained or
   evaluated again; attacks added to the protocol later are run on its
   model (`supplement`), which a fresh clone retrains (`regenerate`).
   The record keeps the SHA-256 of the model's weights (`weights_sha256`):
   a model found in `runs/` or retrained later is used only if it is the
   same model, bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from typing import Any

import keras
import numpy as np

from he_keras import evaluation
from he_keras.data import load_dataset, to_numpy
from he_keras.evaluation import points as points_lib
from he_keras.evaluation import run_ensemble
from he_keras.files import read_json, write_json
from he_keras.models.io import load_model
from he_keras.runs import TrainConfig, run

from experiments.arms import ARMS, FORMAT, QUICK_N_TEST, RESULTS, RUNS, run_dir, unit_path
from experiments.protocol import protocol, scale_invariant


def run_unit(dataset: str, arm_name: str, seed: int, results: str = RESULTS, runs: str = RUNS,
             quick: bool = False, log=print) -> str:
    """Trains (or resumes) and evaluates one unit; returns its JSON path."""


    arm = ARMS[arm_name]
    spec = arm.spec(dataset, seed, quick)
    path = unit_path(dataset, arm_name, seed, results)
    directory = os.path.join(runs, dataset, arm_name, f"seed{seed}")
    n_test = QUICK_N_TEST if quick else 0
    t0 = time.perf_counter()
    metrics = run(train_config(spec, directory, n_test, runs))
    train_wall = time.perf_counter() - t0
    # The epochs this process trained (none when the run had already ended).
    seconds = (metrics["fit_times"] or {}).get("epoch_seconds", [])
    log(f"  trained {dataset}/{arm_name}/seed{seed} in {train_wall:.0f}s")

    model = load_model(metrics["model_path"])
    checksum = weights_sha256(model)
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
        "model": {"path": os.path.relpath(metrics["model_path"], runs), "weights_sha256": checksum},
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


def weights_sha256(model: keras.Model) -> str:
    """SHA-256 of a model's weights: every variable's dtype, shape and bytes, in order.

    Two models with the same architecture hash alike only if every weight is
    bit-identical (the identity of a unit's model, `regenerate`). Variable
    names are left out: Keras numbers unnamed layers per process.
    """
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{value.dtype}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def same_model(record: dict, model_path: str) -> bool:
    """Whether the model at `model_path` is the unit's (its `weights_sha256`; True if the record has none)."""
    recorded = record.get("model", {}).get("weights_sha256")
    return recorded is None or weights_sha256(load_model(model_path)) == recorded


def train_config(spec: dict, output_dir: str, n_eval: int, runs: str) -> Any:
    """The `TrainConfig` of a unit's spec (JSON lists back to tuples; `init_arm`
    becomes the `init_model` path of that arm's model in `runs`)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
    init_arm = fields.pop("init_arm", "")
    if init_arm:
        fields["init_model"] = os.path.join(run_dir(runs, spec["dataset"], init_arm, spec["seed"]), "model.keras")
    return TrainConfig(**fields, output_dir=output_dir, n_eval=n_eval, tensorboard=False, verbose=0)


def regenerate(path: str, runs: str = RUNS, results: str = RESULTS, log=print) -> bool:
    """Makes a finished unit's model available here, retraining it if `runs/` lacks it.

    `runs/` is not committed, so a fresh clone has the units' JSONs but not
    their models. Training is deterministic (same spec, seed and data
    order), so the unit is retrained and accepted only if every epoch of
    the new history equals the recorded one and its weights have the
    recorded checksum (`weights_sha256`, units recorded since it exists);
    otherwise the new model is deleted and False returned (analyses that
    need it stay missing). A model already in `runs/` is used only if it
    has the recorded checksum.
    """


    record = read_json(path, "study unit")
    directory = run_dir(runs, record["dataset"], record["arm"], record["seed"])
    name = f"{record['dataset']}/{record['arm']}/seed{record['seed']}"
    model_path = os.path.join(directory, "model.keras")
    if os.path.exists(model_path):
        if same_model(record, model_path):
            return True
        log(f"  {name}: the model in {directory} is not the unit's (weights checksum differs); not used")
        return False
    start = time.perf_counter()
    init_arm = record["spec"].get("init_arm")
    if init_arm and not regenerate(unit_path(record["dataset"], init_arm, record["seed"], results), runs, results,
                                   log):
        return False
    why = ""
    if train_again(record, directory, runs) != 0.0:
        why = "does not repeat the unit's history"
    elif not same_model(record, model_path):
        why = "repeats the unit's history but not its weights (checksum differs)"
    if why:
        shutil.rmtree(directory, ignore_errors=True)
        log(f"  {name}: retrained model {why}; not used")
        return False
    log(f"  {name}: model retrained, history identical"
        f"{', weights checksum identical' if record.get('model') else ''} ({time.perf_counter() - start:.0f}s)")
    return True


def train_again(record: dict, directory: str, runs: str = RUNS) -> float:
    """Trains a unit's spec and seed into `directory` again.

    Returns:
        0.0 if the new per-epoch history equals the unit's recorded one
        element for element (as a deterministic runner on the same code and
        machine gives), else the largest absolute difference between them
        (inf if they do not have the same entries or a value is not finite).
    """


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


def missing_attacks(path: str) -> list:
    """Standalone attacks of the current protocol that a finished unit has not run."""
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
