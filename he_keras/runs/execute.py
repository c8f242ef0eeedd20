"""A training run end to end: one resumable `fit`, then the final evaluation.

`apps/train.py` turns flags into a `TrainConfig` and calls `run`; experiments
call `run` directly. A run is one `trainer.fit(..., epochs=N,
initial_epoch=<resumed epoch>, callbacks=...)` (the multi-worker loop offers
the same call), so the progress bar counts "Epoch 12/30" and Keras callbacks
(EarlyStopping, ReduceLROnPlateau, CSVLogger, user callbacks) see one
training run. Epoch `e` shuffles and augments with seed `seed * 100003 + e`,
whether or not the run was resumed; `steps_per_epoch` makes an epoch a
fraction of the training split. A `validation_split` of the training data
(held out by the loader without reading the data: a seeded, stratified draw
for in-memory datasets, the split's tail for tfds ones) is attacked after
every epoch (`val_clean_accuracy`, `val_adv_accuracy`), over the same
fraction of it as the epoch covers of the training data. The test split is
evaluated once, at the end, batch by batch through the library's evaluation
path (`he_keras.evaluation.pgd_accuracy`); nothing holds a whole split in
memory. A run writes into `output_dir`:

- `checkpoints/` — a TF checkpoint after the epoch that ends
  `checkpoint_seconds` (default 30) or more after the previous one, after
  the last epoch and after an early stop (every epoch with 0, and always
  with `multi_worker`, whose workers must resume from one epoch), the last
  two kept
  (classifier and optimizer variables with the step count the LR schedule
  reads, the HE scale, the attacks' random generators, Keras seed-generator
  states such as dropout's, FreeAT's perturbation buffer, the epoch), so a
  killed run resumes from its last checkpointed epoch; an unreadable newest
  checkpoint falls back to the previous one;
- `logs/` — TensorBoard: losses, accuracies (training and validation),
  learning rate and HE scale per epoch (`tensorboard=False` turns it off);
- `model.keras` — the trained classifier (written atomically);
- `metrics.json` — config, per-epoch history, final clean and PGD accuracy
  with the attack settings (written atomically after every epoch, before any
  checkpoint, so its history always covers the checkpointed epochs; a resume
  cuts it back to them), and
  `train_seconds` with where this process's `fit` spent them (`fit_times`:
  the first compiled call, each epoch, the time outside the epochs).

A run directory that holds a checkpoint is resumed only with the settings it
was started with (`RESUMABLE_CHANGES` may differ); one that holds another
run's outputs is never overwritten.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from typing import Sequence

import keras
import tensorflow as tf

from he_keras.data import batches, load_dataset, split_validation, test_batches
from he_keras.defaults import pgd_step_size
from he_keras.evaluation import pgd_accuracy
from he_keras.files import read_json, write_atomic, write_json
from he_keras.runs.build import (
    build_trainer,
    epoch_stream,
    initial_weights_of,
    make_callbacks,
    make_optimizer,
    make_strategy,
    model_path,
    prerequisite_runs,
    training_passes,
)
from he_keras.runs.config import TrainConfig, check_run_dir
from he_keras.training.callbacks import EpochSummaries, RunTimes, TrainingStateLogs
from he_keras.training.checkpointing import EpochCheckpoint, restore_newest_readable, training_checkpoint
from he_keras.training.eps_warmup import EpsilonWarmup
from he_keras.training.multi_worker import DistributedTrainLoop, worker_output_dir


def with_prerequisites(config: TrainConfig) -> TrainConfig:
    """Trains the runs the framework needs first and points the config at their models.

    A prerequisite run whose `model.keras` exists is reused.

    Args:
        config: The validated `TrainConfig`.

    Returns:
        The config with each prerequisite's model path as its framework
        parameter (the config itself when there is none).
    """
    prerequisites = prerequisite_runs(config)
    if not prerequisites:
        return config
    params = dict(config.framework_params)
    for name, prerequisite in prerequisites.items():
        path = model_path(prerequisite.output_dir)
        params[name] = path if os.path.exists(path) else run(prerequisite)["model_path"]
    return dataclasses.replace(config, framework_params=params)


def epoch_steps(requested: int, full_epoch: int, validation_batches: int) -> tuple[int, int]:
    """Training batches per epoch and validation batches per validation pass.

    `requested` training batches (0: all) make an epoch that fraction of the
    training split; the validation pass then covers the same fraction of the
    validation batches (at least one), so a partial epoch costs the same for
    any split size.

    Args:
        requested: `TrainConfig.steps_per_epoch` (0 = the whole split).
        full_epoch: Batches of a pass over the training split.
        validation_batches: Batches of a pass over the validation split.

    Returns:
        `(steps_per_epoch, validation_steps)`.
    """
    steps = min(requested, full_epoch) if requested else full_epoch
    return steps, min(validation_batches, math.ceil(validation_batches * steps / full_epoch))


def run(
    config: TrainConfig,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Trains with one `fit`, checkpointing at epoch ends, then evaluates.

    Args:
        config: A `TrainConfig` (validated here before any compute).
        extra_callbacks: Keras callbacks added to the configured ones; they
            run after them and before TensorBoard and the checkpoint.

    Returns:
        The metrics dictionary also written to `metrics.json`.

    Example:

    ```python
    metrics = run(TrainConfig(epochs=2, output_dir="/tmp/run"))
    metrics["test"]["robust_accuracy"]
    ```
    """
    config.validate()
    # A multi-worker strategy must exist before any other TensorFlow op.
    strategy = make_strategy(config.strategy)
    multi_worker = config.strategy == "multi_worker"
    if multi_worker:
        config = dataclasses.replace(
            config, output_dir=worker_output_dir(config.output_dir, strategy)
        )
        check_run_dir(config)
    config = with_prerequisites(config)
    keras.utils.set_random_seed(config.seed)
    if config.precision != "float32":
        keras.mixed_precision.set_global_policy(config.precision)
    data = load_dataset(config.dataset, config.data_dir)
    splits = split_validation(data, config.validation_split, config.seed, config.n_train)
    train, validation, n_train, n_val = splits.train, splits.validation, splits.n_train, splits.n_validation
    # The multi-worker loop needs the same static batch on every worker; a
    # small validation split gets a smaller batch (a multiple of the replicas).
    val_batch_size = config.batch_size
    if multi_worker:
        full_epoch = n_train // config.batch_size
        replicas = strategy.num_replicas_in_sync
        val_batch_size = min(config.batch_size, n_val - n_val % replicas)
        if full_epoch == 0 or (validation is not None and val_batch_size == 0):
            raise ValueError(
                f"Multi-worker training needs at least one full batch of training and "
                f"one example per replica of validation data. Received: batch_size="
                f"{config.batch_size} for {n_train} training and {n_val} validation examples"
            )
        val_batches = n_val // max(val_batch_size, 1)
    else:
        full_epoch = math.ceil(n_train / config.batch_size)
        val_batches = math.ceil(n_val / val_batch_size)
    steps_per_epoch, validation_steps = epoch_steps(config.steps_per_epoch, full_epoch, val_batches)
    if steps_per_epoch % config.steps_per_execution:
        # A call running past an epoch's end would take the next epoch's batches.
        raise ValueError(
            f"`steps_per_execution` must divide the {steps_per_epoch} training steps per epoch "
            f"({n_train} examples in batches of {config.batch_size}). Received: "
            f"steps_per_execution={config.steps_per_execution}"
        )

    with strategy.scope():
        trainer = build_trainer(config, data)
        passes = training_passes(config.epochs, trainer.updates_per_batch)
        trainer.compile(
            optimizer=make_optimizer(
                config,
                steps_per_epoch,
                epochs=passes * trainer.updates_per_batch,
            ),
            jit_compile=config.jit_compile,
            steps_per_execution=config.steps_per_execution,
        )
        trainer.build((None, *data.input_shape))
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        stopped_var = tf.Variable(False, trainable=False, name="stopped")
        trainer.optimizer.build(trainer.trainable_variables)

    initial_weights = initial_weights_of(config.init_model, trainer.classifier) if config.init_model else None
    os.makedirs(config.output_dir, exist_ok=True)
    metrics_path = os.path.join(config.output_dir, "metrics.json")
    ckpt = training_checkpoint(trainer, epoch_var, stopped_var)
    manager = tf.train.CheckpointManager(
        ckpt, os.path.join(config.output_dir, "checkpoints"), max_to_keep=2
    )
    history: dict = {}
    counters: list = []
    restored = (
        restore_newest_readable(ckpt, manager, lambda line: print(line, file=sys.stderr, flush=True))
        if config.resume
        else None
    )
    initial_epoch = int(epoch_var.numpy())
    if initial_weights is not None and not restored:
        trainer.classifier.set_weights(initial_weights)
    if restored:
        if os.path.exists(metrics_path):
            # Drop the epochs a kill interrupted after metrics.json was written.
            saved = read_json(metrics_path, "metrics")
            history = {
                key: values[:initial_epoch] for key, values in saved.get("history", {}).items()
            }
            counters = saved.get("callback_counters", [])[:initial_epoch]
        if config.verbose:
            print(f"Resumed from {restored} at epoch {initial_epoch}")
    if config.verbose and passes != config.epochs:
        print(
            f"{config.epochs} epochs of {trainer.updates_per_batch} updates per batch: "
            f"{passes} passes over the data"
        )

    validation_batches = (
        None
        if validation is None
        else batches(validation, val_batch_size, drop_remainder=multi_worker, steps=validation_steps)
    )
    callbacks = [
        TrainingStateLogs(),
        # Warm-up epochs count the budget's epochs (FreeAT: replays per pass).
        *([EpsilonWarmup(config.eps_warmup_epochs / trainer.updates_per_batch)]
          if config.eps_warmup_epochs else []),
        *make_callbacks(dataclasses.replace(config, epochs=passes), trainer, data),
        *extra_callbacks,
    ]
    if config.tensorboard:
        callbacks.append(EpochSummaries(os.path.join(config.output_dir, "logs")))
    callbacks.append(
        EpochCheckpoint(
            manager,
            epoch_var,
            stopped_var,
            metrics_path,
            dataclasses.asdict(config),
            history,
            counters,
            callbacks=list(callbacks),
            # Workers must resume from the same epoch: each checkpoints every epoch.
            interval_seconds=0.0 if multi_worker else config.checkpoint_seconds,
        )
    )
    times = RunTimes()
    started = time.perf_counter()
    if bool(stopped_var.numpy()):
        if config.verbose:
            print(f"The run was stopped early after epoch {initial_epoch}; not training further")
    elif initial_epoch < passes:
        # Epoch e's batches are shuffled and augmented with seed
        # `seed * 100003 + e`, whether or not the run was resumed.
        stream = epoch_stream(
            lambda epoch: batches(
                train,
                config.batch_size,
                shuffle=True,
                augment=data.augment,
                seed=config.seed * 100_003 + epoch,
                drop_remainder=multi_worker,
                steps=steps_per_epoch,
            ),
            initial_epoch,
            passes,
        )
        fit = (
            DistributedTrainLoop(trainer, strategy).fit
            if multi_worker
            else functools.partial(trainer.fit, shuffle=False)
        )
        fit(
            stream,
            epochs=passes,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            callbacks=[times, *callbacks],
            validation_data=validation_batches,
            verbose=config.verbose,
        )
    train_seconds = time.perf_counter() - started

    final = pgd_accuracy(
        trainer.classifier,
        test_batches(data, config.n_eval),
        eps=config.eps,
        steps=config.eval_steps,
        step_size=config.eval_step_size or pgd_step_size(config.eps, config.eval_steps),
        norm=config.norm,
        seed=config.seed,
    )
    path = model_path(config.output_dir)
    write_atomic(path, trainer.classifier.save, suffix=".keras")
    metrics = {
        "config": dataclasses.asdict(config),
        "history": history,
        "callback_counters": counters,
        "passes": passes,
        "optimizer_updates": int(trainer.optimizer.iterations.numpy()),
        "train_seconds": train_seconds,
        # Where this process's `fit` spent them (None when nothing was trained).
        "fit_times": times.result(),
        "steps_per_epoch": steps_per_epoch,
        "validation": None if validation is None else {
            "n_examples": min(n_val, validation_steps * val_batch_size),
            "n_held_out": n_val,
            "attack": {
                "name": f"PGD-{trainer.eval_steps}",
                "step_size": trainer.eval_step_size,
                "steps": trainer.eval_steps,
            },
        },
        "test": final,
        "model_path": path,
    }
    write_json(metrics_path, metrics)
    return metrics
