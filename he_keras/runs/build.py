"""The parts of a training run, built from its `TrainConfig`.

Strategy, classifier and framework trainer, optimizer with its learning-rate
schedule, configured callbacks, initial weights for fine-tuning, the epoch
stream of training batches, and the runs a framework needs first
(`prerequisite_runs`: HAT's standard helper model). `he_keras.runs.run`
puts them together.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable, Optional

import keras
import tensorflow as tf

from he_keras.models import build_model
from he_keras.models.io import load_model
from he_keras.runs.config import TrainConfig
from he_keras.training import CALLBACKS, FRAMEWORKS
from he_keras.training.lr_schedules import make_lr_schedule


@functools.lru_cache(maxsize=None)
def _mirrored_strategy(devices: tuple) -> tf.distribute.MirroredStrategy:
    # One instance per device set and process: a second MirroredStrategy on the
    # same devices reuses the first one's collective instance keys, and TF then
    # aborts its all-reduce ("Shape mismatch in the collective instance").
    return tf.distribute.MirroredStrategy(list(devices))


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy of a run (`default`, `mirrored`, `multi_worker`).

    `mirrored` returns the same strategy object for every call in a process.

    Args:
        name: One of `he_keras.runs.config.STRATEGIES`.

    Returns:
        The strategy (the default one for `default`).
    """
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return _mirrored_strategy(tuple(devices))
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def prerequisite_runs(config: TrainConfig) -> dict:
    """The runs whose models the framework needs first (`prerequisites`).

    Args:
        config: The validated `TrainConfig` of the run.

    Returns:
        `{framework parameter: TrainConfig of the run that trains it}`.
    """
    return {name: dataclasses.replace(config, **overrides)
            for name, overrides in FRAMEWORKS[config.framework].prerequisites(config).items()}


def build_trainer(config: TrainConfig, data) -> keras.Model:
    """Builds the classifier and its framework trainer (call in strategy scope).

    Args:
        config: The run's settings.
        data: The `he_keras.data.Dataset` (input shape, classes, mean, std).

    Returns:
        The uncompiled trainer (a `FRAMEWORKS` class around the classifier).
    """
    model_params = {"depth": config.depth, "width": config.width} if config.model == "wide_resnet" else {}
    classifier = build_model(
        config.model,
        data.input_shape,
        data.num_classes,
        head=config.head,
        s=config.s,
        mean=data.mean,
        std=data.std,
        feature_norm=config.feature_norm,
        weight_norm=config.weight_norm,
        **model_params,
    )
    return FRAMEWORKS[config.framework](
        classifier,
        eps=config.eps,
        step_size=config.step_size,
        steps=config.steps,
        norm=config.norm,
        random_start=config.random_start or None,
        attack_training=config.attack_bn_training,
        margin=config.m,
        # The trainer's test_step attack is the per-epoch validation.
        eval_steps=config.val_steps,
        eval_step_size=config.eval_step_size or None,
        seed=config.seed,
        clean_accuracy=config.train_clean_accuracy,
        **config.framework_params,
    )


def training_passes(epochs: int, updates_per_batch: int) -> int:
    """Passes over the data of an `epochs` budget: `ceil(epochs / updates_per_batch)`.

    An epoch of the budget is one optimizer update per batch of the data, so
    FreeAT (`replays` updates per batch) makes `ceil(epochs / replays)` passes,
    as in Shafahi et al. (2019); every other framework makes `epochs`.

    Args:
        epochs: The budget in epochs.
        updates_per_batch: The trainer's optimizer updates per batch.

    Returns:
        The number of passes.
    """
    return math.ceil(epochs / updates_per_batch)


def make_optimizer(
    config: TrainConfig, steps_per_epoch: int, epochs: Optional[int] = None
) -> keras.optimizers.Optimizer:
    """SGD (decoupled weight decay) or Adam with the configured LR schedule.

    Args:
        config: The run's settings.
        steps_per_epoch: Optimizer updates per epoch.
        epochs: Epochs the schedule spans (default `config.epochs`);
            `lr_decay_epochs` count the same epochs.

    Returns:
        The optimizer.
    """
    lr = make_lr_schedule(
        config.lr_schedule,
        config.lr,
        config.epochs if epochs is None else epochs,
        steps_per_epoch,
        config.lr_decay_epochs,
        config.lr_decay_factor,
    )
    wd = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd)
    return keras.optimizers.Adam(lr, weight_decay=wd)


def make_callbacks(config: TrainConfig, trainer: keras.Model, data) -> list:
    """Callbacks named in `config.callbacks` (see `he_keras.training.CALLBACKS`).

    Args:
        config: The run's settings (`epochs`: the passes over the data).
        trainer: The framework trainer.
        data: The `he_keras.data.Dataset`.

    Returns:
        The callbacks, in the configured order.
    """
    return [CALLBACKS[name](config, trainer, data) for name in config.callbacks]


def initial_weights_of(path: str, classifier: keras.Model) -> list:
    """The weights of the `.keras` model at `path`, checked to fit `classifier`.

    Args:
        path: `TrainConfig.init_model` (e.g. a standard run's `model.keras`,
            for adversarial fine-tuning).
        classifier: The run's freshly built classifier.

    Returns:
        The weights, in `classifier.get_weights()` order.

    Raises:
        ValueError: naming `init_model` if the file cannot be loaded or its
            weights do not have the shapes of the configured model's.
    """
    try:
        weights = load_model(path, saved_model=False).get_weights()
    except ValueError as err:
        raise ValueError(f"`init_model`: {err}") from err
    have = [tuple(w.shape) for w in weights]
    want = [tuple(w.shape) for w in classifier.get_weights()]
    if have != want:
        raise ValueError(
            f"`init_model` {path!r} does not fit the configured model: its weights have shapes "
            f"{have}, the model's {want}"
        )
    return weights


def epoch_stream(
    epoch_batches: Callable[[int], tf.data.Dataset], first: int, end: int
) -> tf.data.Dataset:
    """The batches of epochs `first .. end - 1`, one after the other.

    Each epoch's batches are built by `epoch_batches(epoch)` with a Python
    epoch index (tf.data's shuffle takes no tensor seed inside `flat_map`),
    and the epochs are concatenated as a balanced tree, so an element passes
    through `log2(epochs)` concatenations and only the current epoch's
    iterator (and shuffle buffer) is alive.

    The stream runs without tf.data's autotuning: its model thread waits out
    an optimization period that grows to tens of seconds, and the iterator's
    destructor, when `fit` returns, waited for it (16-39 s after 25 s of
    quickstart training, in four runs of seven; the README's "Time to a
    robust model"). Batches, their order and the prefetching stay as they are.

    Args:
        epoch_batches: Builds the batches of one epoch.
        first: First epoch.
        end: One past the last epoch (`first < end`).

    Returns:
        A `tf.data.Dataset` for `fit(..., steps_per_epoch=...)`.
    """
    def concatenate(lo: int, hi: int) -> tf.data.Dataset:
        if hi - lo == 1:
            return epoch_batches(lo)
        mid = (lo + hi) // 2
        return concatenate(lo, mid).concatenate(concatenate(mid, hi))

    options = tf.data.Options()
    options.autotune.enabled = False
    return concatenate(first, end).with_options(options)


def model_path(output_dir: str) -> str:
    """Where a run in `output_dir` writes its trained classifier."""
    return os.path.join(output_dir, "model.keras")
