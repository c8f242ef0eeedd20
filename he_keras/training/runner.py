"""End-to-end training runs: config, validation, one resumable `fit`, outputs.

`apps/train.py` turns flags into a `TrainConfig` and calls `run`; experiments
call `run` directly. A run is one `trainer.fit(..., epochs=N,
initial_epoch=<resumed epoch>, callbacks=...)` (the multi-worker loop offers
the same call), so the progress bar counts "Epoch 12/30" and Keras callbacks
(EarlyStopping, ReduceLROnPlateau, CSVLogger, user callbacks) see one
training run. Epoch `e` shuffles and augments with seed `seed * 100003 + e`,
whether or not the run was resumed. A seeded, stratified
`validation_split` of the training data is attacked after every epoch
(`val_clean_accuracy`, `val_adv_accuracy`); the test split is evaluated once,
at the end. A run writes into `output_dir`:

- `checkpoints/` — a TF checkpoint after every epoch, the last two kept
  (classifier and optimizer variables with the step count the LR schedule
  reads, the HE scale, the attacks' random generators, Keras seed-generator
  states such as dropout's, FreeAT's perturbation buffer, the epoch), so a
  killed run resumes from its last finished epoch; an unreadable newest
  checkpoint falls back to the previous one;
- `logs/` — TensorBoard: losses, accuracies (training and validation),
  learning rate and HE scale per epoch (`tensorboard=False` turns it off);
- `model.keras` — the trained classifier (written atomically);
- `metrics.json` — config, per-epoch history, final clean and PGD accuracy
  with the attack settings (written atomically after every epoch, before the
  checkpoint, so its history always covers the checkpointed epochs).

A run directory that holds a checkpoint is resumed only with the settings it
was started with (`RESUMABLE_CHANGES` may differ); one that holds another
run's outputs is never overwritten.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from he_keras.attacks.core import NORMS, RANDOM_STARTS, ProjectedGradientAttack
from he_keras.data import EMBEDDED, batches, load_dataset, to_numpy
from he_keras.data.tfds_datasets import TFDS_DATASETS
from he_keras.defaults import (
    DEFAULT_SCALE,
    DIGITS_EPS,
    EVAL_PGD_STEPS,
    MARGIN_OF_HEAD,
    margin_of,
    pgd_step_size,
)
from he_keras.files import jsonable, read_json, write_atomic, write_json  # noqa: F401  (re-exported)
from he_keras.models import HEADS, MODELS, build_model
from he_keras.training import CALLBACKS, FRAMEWORKS
from he_keras.training.callbacks import EpochSummaries, TrainingStateLogs
from he_keras.training.eps_warmup import EpsilonWarmup
from he_keras.training.checkpointing import (  # noqa: F401  (training_checkpoint re-exported)
    EpochCheckpoint,
    restore_newest_readable,
    training_checkpoint,
)
from he_keras.training.lr_schedules import LR_SCHEDULES, make_lr_schedule
from he_keras.training.multi_worker import DistributedTrainLoop, worker_output_dir
from he_keras.training.splits import split_validation
from he_keras.validation import validate_images, validate_labels

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Settings a resumed run may change: they do not alter what the remaining
# epochs compute (more epochs extend the run). Any other difference from the
# checkpointed run's settings is refused.
RESUMABLE_CHANGES = frozenset({
    "data_dir", "epochs", "eval_step_size", "eval_steps", "jit_compile",
    "n_eval", "output_dir", "resume", "strategy", "tensorboard", "verbose",
})


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; `validate()` checks it before compute.

    Field names match the flags of `apps/train.py`.
    """

    dataset: str = "digits"
    data_dir: Optional[str] = None
    n_train: int = 0
    model: str = "small_cnn"
    depth: int = 34
    width: int = 10
    head: str = "he"
    s: float = DEFAULT_SCALE
    m: float = MARGIN_OF_HEAD
    feature_norm: bool = True
    weight_norm: bool = True
    framework: str = "pgdat"
    eps: float = DIGITS_EPS
    step_size: Optional[float] = None  # None: the framework's own
    steps: int = 7
    eps_warmup_epochs: float = 0.0  # epochs over which the training eps grows from 0
    norm: str = "linf"
    random_start: str = ""
    attack_bn_training: Optional[bool] = None  # None: the framework's own
    framework_params: dict = dataclasses.field(default_factory=dict)
    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_decay_epochs: Sequence[float] = ()
    lr_decay_factor: float = 0.1
    seed: int = 0
    output_dir: str = "runs/quickstart"
    resume: bool = True
    strategy: str = "default"
    jit_compile: bool = False
    precision: str = "float32"
    eval_steps: int = EVAL_PGD_STEPS
    eval_step_size: float = 0.0
    n_eval: int = 0
    validation_split: float = 0.1
    val_steps: int = 10
    tensorboard: bool = True
    callbacks: Sequence[str] = ()
    verbose: int = 2
    init_model: str = ""  # a .keras model whose weights start the run (fine-tuning)

    def validate(self) -> None:
        """Raises ValueError naming the first invalid value."""

        def one_of(name, value, allowed):
            if value not in allowed:
                raise ValueError(
                    f"Unknown {name}. Expected one of {sorted(allowed)}. "
                    f"Received: {name}={value!r}"
                )

        one_of("dataset", self.dataset, list(EMBEDDED) + list(TFDS_DATASETS))
        one_of("model", self.model, list(MODELS))
        one_of("head", self.head, HEADS)
        one_of("framework", self.framework, list(FRAMEWORKS))
        one_of("norm", self.norm, NORMS)
        if self.random_start:
            one_of("random_start", self.random_start, RANDOM_STARTS)
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        one_of("strategy", self.strategy, STRATEGIES)
        one_of("precision", self.precision, PRECISIONS)
        bound = 1.0 if self.norm == "linf" else float("inf")
        checks = [
            ("eps", 0.0 <= self.eps <= bound, f"in [0, {bound}]"),
            ("step_size", self.step_size is None or self.step_size > 0, "> 0"),
            ("steps", self.steps >= 1, ">= 1"),
            ("eps_warmup_epochs", 0.0 <= self.eps_warmup_epochs < self.epochs, "in [0, epochs)"),
            ("s", self.s > 0, "> 0"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("depth", self.depth >= 10 and (self.depth - 4) % 6 == 0, "6n + 4 >= 10"),
            ("width", self.width >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("momentum", 0.0 <= self.momentum < 1.0, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("lr_decay_factor", self.lr_decay_factor > 0, "> 0"),
            ("eval_steps", self.eval_steps >= 1, ">= 1"),
            ("eval_step_size", self.eval_step_size >= 0, ">= 0 (0 = automatic)"),
            ("validation_split", 0.0 <= self.validation_split < 1.0, "in [0, 1) (0 = no validation)"),
            ("val_steps", self.val_steps >= 1, ">= 1"),
            ("n_train", self.n_train >= 0, ">= 0 (0 = all)"),
            ("n_eval", self.n_eval >= 0, ">= 0 (0 = all)"),
        ]
        for name, ok, rule in checks:
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not np.isfinite(value)):
                raise ValueError(f"`{name}` must be {rule}. Received: {name}={value!r}")
        margin_of(self.head, self.m)
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ValueError(
                f"`output_dir` exists and is not a directory. Received: output_dir={self.output_dir!r}"
            )
        if self.init_model and not os.path.isfile(self.init_model):
            raise ValueError(
                f"`init_model`: Model file not found. Received: init_model={self.init_model!r}"
            )
        if self.data_dir and not os.path.isdir(self.data_dir):
            raise ValueError(f"`data_dir` does not exist. Received: data_dir={self.data_dir!r}")
        for name in self.callbacks:
            one_of("callback", name, list(CALLBACKS))
        cls = FRAMEWORKS[self.framework]
        unknown = set(self.framework_params) - set(getattr(cls, "hyperparameters", ()))
        if unknown:
            raise ValueError(
                f"Framework {self.framework!r} does not take {sorted(unknown)}"
            )
        check_run_dir(self)


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
    from he_keras.models.io import load_model

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


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The newest checkpoint of the run in `output_dir`, or None."""
    return tf.train.latest_checkpoint(os.path.join(output_dir, "checkpoints"))


def check_run_dir(config: TrainConfig) -> None:
    """Refuses a run that would overwrite or silently change an earlier one.

    A directory with a checkpoint resumes only with `config.resume` and with
    the settings recorded in its `metrics.json` (up to `RESUMABLE_CHANGES`).
    Without a checkpoint, a finished run's `model.keras` or final metrics are
    never overwritten. A run killed before its first checkpoint may restart.

    Args:
        config: The run's settings.

    Raises:
        ValueError: naming the directory and the conflicting settings.
    """
    metrics_path = os.path.join(config.output_dir, "metrics.json")
    metrics = read_json(metrics_path, "metrics") if os.path.exists(metrics_path) else {}
    checkpoint = latest_checkpoint(config.output_dir)
    if checkpoint is None:
        if os.path.exists(os.path.join(config.output_dir, "model.keras")) or "test" in metrics:
            raise ValueError(
                f"`output_dir` {config.output_dir!r} holds a finished run without "
                "checkpoints; pass a new --output_dir"
            )
        return
    if not config.resume:
        raise ValueError(
            f"`output_dir` {config.output_dir!r} holds the checkpoints of a run "
            f"({os.path.basename(checkpoint)}); --noresume would overwrite it. Resume it "
            "(drop --noresume) or pass a new --output_dir"
        )
    saved = metrics.get("config", {})
    current = json.loads(json.dumps(dataclasses.asdict(config), default=jsonable))
    # A setting added to TrainConfig after the run was saved ran at its default.
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig()), default=jsonable))
    changed = []
    for name in sorted(current.keys() - RESUMABLE_CHANGES if saved else ()):
        old, new = saved.get(name, defaults.get(name)), current[name]
        # Frameworks complete their parameters (HAT's helper model path), so
        # only the parameters given now are compared.
        if isinstance(new, dict):
            old = {k: v for k, v in old.items() if k in new}
        if old != new:
            changed.append(f"{name}={old!r} (now {new!r})")
    if changed:
        raise ValueError(
            f"`output_dir` {config.output_dir!r} holds a run with other settings: "
            f"{', '.join(changed)}. Resume with the same settings, or pass a new --output_dir"
        )


@functools.lru_cache(maxsize=None)
def _mirrored_strategy(devices: tuple) -> tf.distribute.MirroredStrategy:
    # One instance per device set and process: a second MirroredStrategy on the
    # same devices reuses the first one's collective instance keys, and TF then
    # aborts its all-reduce ("Shape mismatch in the collective instance").
    return tf.distribute.MirroredStrategy(list(devices))


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy of a run (`default`, `mirrored`, `multi_worker`).

    `mirrored` returns the same strategy object for every call in a process.
    """
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return _mirrored_strategy(tuple(devices))
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def build_trainer(config: TrainConfig, data) -> keras.Model:
    """Builds classifier, framework trainer and optimizer (call in strategy scope)."""
    model_params = (
        {"depth": config.depth, "width": config.width}
        if config.model == "wide_resnet"
        else {}
    )
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
    kwargs = dict(
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
        **config.framework_params,
    )
    return FRAMEWORKS[config.framework](classifier, **kwargs)


def training_passes(epochs: int, updates_per_batch: int) -> int:
    """Passes over the data of an `epochs` budget: `ceil(epochs / updates_per_batch)`.

    An epoch of the budget is one optimizer update per batch of the data, so
    FreeAT (`replays` updates per batch) makes `ceil(epochs / replays)` passes,
    as in Shafahi et al. (2019); every other framework makes `epochs`.
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
        return keras.optimizers.SGD(
            lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd
        )
    return keras.optimizers.Adam(lr, weight_decay=wd)


def evaluate_robustness(
    classifier: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    step_size: float,
    steps: int,
    norm: str,
    seed: int,
    batch_size: int = 256,
) -> dict:
    """Clean and PGD accuracy (uniform start, CE, per-example best iterate)."""
    pgd = ProjectedGradientAttack(
        eps=eps, step_size=step_size, steps=steps, norm=norm, keep_best=True, seed=seed
    )
    def predict(images):
        # A direct call, not predict_on_batch: under MultiWorkerMirroredStrategy
        # predict_on_batch concatenates the outputs of all workers.
        return np.argmax(np.asarray(classifier(images, training=False)), 1)

    clean = robust = 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        clean += int(np.sum(predict(xb) == yb))
        robust += int(np.sum(predict(pgd(classifier, xb, yb)) == yb))
    return {
        "n_examples": int(len(x)),
        "clean_accuracy": clean / len(x),
        "robust_accuracy": robust / len(x),
        "attack": {
            "name": f"PGD-{steps}",
            "objective": "ce",
            "eps": eps,
            "step_size": step_size,
            "steps": steps,
            "norm": norm,
            "random_start": "uniform",
            "seed": seed,
        },
    }


def run(
    config: TrainConfig,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Trains with one `fit`, checkpointing every epoch, then evaluates.

    Args:
        config: A `TrainConfig` (validated here before any compute).
        extra_callbacks: Keras callbacks added to the configured ones; they
            run after them and before TensorBoard and the checkpoint.

    Returns:
        The metrics dictionary also written to `metrics.json`.
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
    config = FRAMEWORKS[config.framework].prepare_run(config, run)
    keras.utils.set_random_seed(config.seed)
    if config.precision != "float32":
        keras.mixed_precision.set_global_policy(config.precision)
    data = load_dataset(config.dataset, config.data_dir)
    x_test, y_test = to_numpy(data.test, config.n_eval or None)
    validate_images(x_test, data.input_shape, name="test images")
    validate_labels(y_test, data.num_classes, len(x_test))
    train = data.train.take(config.n_train) if config.n_train else data.train
    train, validation, n_train, n_val = split_validation(
        train, config.validation_split, config.seed
    )
    # The multi-worker loop needs the same static batch on every worker; a
    # small validation split gets a smaller batch (a multiple of the replicas).
    val_batch_size = config.batch_size
    if multi_worker:
        steps_per_epoch = n_train // config.batch_size
        replicas = strategy.num_replicas_in_sync
        val_batch_size = min(config.batch_size, n_val - n_val % replicas)
        if steps_per_epoch == 0 or (validation is not None and val_batch_size == 0):
            raise ValueError(
                f"Multi-worker training needs at least one full batch of training and "
                f"one example per replica of validation data. Received: batch_size="
                f"{config.batch_size} for {n_train} training and {n_val} validation examples"
            )
    else:
        steps_per_epoch = int(np.ceil(n_train / config.batch_size))

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
        else batches(validation, val_batch_size, drop_remainder=multi_worker)
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
        )
    )
    started = time.time()
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
            callbacks=callbacks,
            validation_data=validation_batches,
            verbose=config.verbose,
        )
    train_seconds = time.time() - started

    test_step_size = config.eval_step_size or pgd_step_size(config.eps, config.eval_steps)
    final = evaluate_robustness(
        trainer.classifier,
        x_test,
        y_test,
        eps=config.eps,
        step_size=test_step_size,
        steps=config.eval_steps,
        norm=config.norm,
        seed=config.seed,
    )
    model_path = os.path.join(config.output_dir, "model.keras")
    write_atomic(model_path, trainer.classifier.save, suffix=".keras")
    metrics = {
        "config": dataclasses.asdict(config),
        "history": history,
        "callback_counters": counters,
        "passes": passes,
        "optimizer_updates": int(trainer.optimizer.iterations.numpy()),
        "train_seconds": train_seconds,
        "validation": None if validation is None else {
            "n_examples": n_val,
            "attack": {
                "name": f"PGD-{trainer.eval_steps}",
                "step_size": trainer.eval_step_size,
                "steps": trainer.eval_steps,
            },
        },
        "test": final,
        "model_path": model_path,
    }
    write_json(metrics_path, metrics)
    return metrics


def epoch_stream(
    epoch_batches: Callable[[int], tf.data.Dataset], first: int, end: int
) -> tf.data.Dataset:
    """The batches of epochs `first .. end - 1`, one after the other.

    Each epoch's batches are built by `epoch_batches(epoch)` with a Python
    epoch index (tf.data's shuffle takes no tensor seed inside `flat_map`),
    and the epochs are concatenated as a balanced tree, so an element passes
    through `log2(epochs)` concatenations and only the current epoch's
    iterator (and shuffle buffer) is alive.

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

    return concatenate(first, end)


def make_callbacks(config: TrainConfig, trainer: keras.Model, data) -> list:
    """Callbacks named in `config.callbacks` (see `he_keras.training.CALLBACKS`)."""
    return [CALLBACKS[name](config, trainer, data) for name in config.callbacks]
