"""Analyses of a finished unit's model beyond its evaluation.

Margins along adversarial directions (HAT, Sec. 3 and Table 1), the norms of
the class weights (seed 003, Sec. 3.2) and accuracy under common corruptions
(HE paper, Table 5). Each has a `*_missing(path)` test and an `add_*(path)`
that writes into the unit's JSON.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import keras
import numpy as np

from he_keras.data import load_dataset, to_numpy
from he_keras.evaluation import corruption_benchmark
from he_keras.evaluation import margin as margin_lib
from he_keras.evaluation.corruption_selection import select_corruptions
from he_keras.files import read_json, write_json
from he_keras.models.io import load_model
from he_keras.runs import run

from experiments.arms import QUICK_N_TEST, RESULTS, RUNS, run_dir, unit_path
from experiments.units import train_again, train_config


# === Margins along adversarial directions (HAT, Sec. 3 and Table 1) ===

MARGIN_ARMS = ("pgdat", "pgdat_ft", "trades", "trades_b1", "hat")
MARGIN_EPOCHS = (1, 5)  # R1, R5: the unit's own PGD directions after epochs 1 and 5
MARGIN_CAP = 10.0  # L2 units; digits images have 64 pixels in [0, 1] (norm <= 8)
MARGIN_PRECISION = 0.1



def margins_missing(path: str, results: str = RESULTS) -> bool:
    """Whether a finished unit of `MARGIN_ARMS` lacks margins that its seed's standard unit allows."""
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



    start = time.perf_counter()
    record = read_json(path, "study unit")
    dataset, arm, seed, spec = record["dataset"], record["arm"], record["seed"], record["spec"]
    model = load_model(os.path.join(run_dir(runs, dataset, arm, seed), "model.keras"))
    x, _ = to_numpy(load_dataset(dataset).test, len(record["eval"]["points"]["clean"]))
    attack = margin_lib.direction_attack(spec["eps"], seed=seed + 200)  # recorded; the same in each call below
    sources = {"R0": load_model(os.path.join(run_dir(runs, dataset, "standard", seed), "model.keras"))}
    # Replay the first epochs with snapshots (the same spec, seed and data order).
    replay_dir = tempfile.mkdtemp(prefix="replay-", dir=run_dir(runs, dataset, arm, seed))
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
    record = read_json(path, "study unit")
    return record["arm"] in WEIGHT_NORM_ARMS and "class_weight_norms" not in record


def add_weight_norms(path: str, runs: str = RUNS, log=print) -> None:
    """L2 norm of each class's weight vector in the unit's linear head (seed 003, Figure 4)."""


    record = read_json(path, "study unit")
    dataset, arm, seed = record["dataset"], record["arm"], record["seed"]
    model = load_model(os.path.join(run_dir(runs, dataset, arm, seed), "model.keras"))
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
    record = read_json(path, "study unit")
    return record["arm"] in CORRUPTION_ARMS and not corruptions_current(record)


def corruptions_current(record: dict) -> bool:
    """Whether a unit record's corruption benchmark ran the corruptions that
    now apply to its images (`select_corruptions`); False without one, or
    for one that predates the record of its image shape."""
    done = record.get("corruptions")
    if done is None or "image_shape" not in done:
        return False
    names, _ = select_corruptions("generated", record["dataset"], image_shape=done["image_shape"])
    return set(names) == set(done["accuracy"])


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



    record = read_json(path, "study unit")
    dataset, arm, seed = record["dataset"], record["arm"], record["seed"]
    directory = run_dir(runs, dataset, arm, seed)
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
