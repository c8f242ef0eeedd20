"""End-to-end training runs: config, validation, resumable epochs, outputs.

`apps/train.py` turns flags into a `TrainConfig` and calls `run`; experiments
call `run` directly. A run writes into `output_dir`:

- `checkpoints/` — a TF checkpoint after every epoch (classifier and optimizer
  variables, the HE scale, the attacks' random-generator states, the epoch),
  so a killed run resumes from its last finished epoch;
- `model.keras` — the trained classifier (written atomically);
- `metrics.json` — config, per-epoch history, final clean and PGD accuracy
  with the attack settings (written atomically after every epoch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from he_keras.attacks.core import NORMS, RANDOM_STARTS, ProjectedGradientAttack
from he_keras.data import batches, load_dataset, to_numpy
from he_keras.models import HEADS, MODELS, build_model
from he_keras.training.lr_schedules import LR_SCHEDULES, make_lr_schedule
from he_keras.validation import validate_images, validate_labels

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


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
    s: float = 15.0
    m: float = -1.0
    feature_norm: bool = True
    weight_norm: bool = True
    framework: str = "pgdat"
    eps: float = 0.3
    step_size: float = 0.075
    steps: int = 7
    norm: str = "linf"
    random_start: str = ""
    attack_bn_training: bool = False
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
    eval_steps: int = 20
    eval_step_size: float = 0.0
    n_eval: int = 0
    callbacks: Sequence[str] = ()
    verbose: int = 2

    def validate(self) -> None:
        """Raises ValueError naming the first invalid value."""
        from he_keras.training import FRAMEWORKS

        def one_of(name, value, allowed):
            if value not in allowed:
                raise ValueError(
                    f"Unknown {name}. Expected one of {sorted(allowed)}. "
                    f"Received: {name}={value!r}"
                )

        from he_keras.data import EMBEDDED
        from he_keras.data.tfds_datasets import TFDS_DATASETS

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
            ("step_size", self.step_size > 0, "> 0"),
            ("steps", self.steps >= 1, ">= 1"),
            ("s", self.s > 0, "> 0"),
            ("m", self.m >= 0 or self.m == -1.0, ">= 0 (or -1 for the paper default)"),
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
            ("n_train", self.n_train >= 0, ">= 0 (0 = all)"),
            ("n_eval", self.n_eval >= 0, ">= 0 (0 = all)"),
        ]
        for name, ok, rule in checks:
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not np.isfinite(value)):
                raise ValueError(f"`{name}` must be {rule}. Received: {name}={value!r}")
        if self.head == "linear" and self.m > 0:
            raise ValueError(
                f"A margin needs --head=he or --head=mhe. Received: head=linear, m={self.m}"
            )
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ValueError(
                f"`output_dir` exists and is not a directory. Received: output_dir={self.output_dir!r}"
            )
        if self.data_dir and not os.path.isdir(self.data_dir):
            raise ValueError(f"`data_dir` does not exist. Received: data_dir={self.data_dir!r}")
        from he_keras.training import CALLBACKS

        for name in self.callbacks:
            one_of("callback", name, list(CALLBACKS))
        cls = FRAMEWORKS[self.framework]
        unknown = set(self.framework_params) - set(getattr(cls, "hyperparameters", ()))
        if unknown:
            raise ValueError(
                f"Framework {self.framework!r} does not take {sorted(unknown)}"
            )


def write_atomic(path: str, writer: Callable[[str], None], suffix: str = "") -> None:
    """Writes a file through `writer(tmp_path)` then renames it into place.

    A kill during the write leaves the previous file (or none), never a
    truncated one.

    Args:
        path: Final path.
        writer: Callable writing the whole file at the path it is given.
        suffix: Suffix of the temporary file (Keras wants `.keras`).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, payload: Any) -> None:
    """Writes JSON atomically."""
    def writer(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=_jsonable)

    write_atomic(path, writer)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy of a run (`default`, `mirrored`, `multi_worker`)."""
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def build_trainer(config: TrainConfig, data) -> keras.Model:
    """Builds classifier, framework trainer and optimizer (call in strategy scope)."""
    from he_keras.training import FRAMEWORKS

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
        margin=None if config.m == -1.0 else config.m,
        eval_steps=config.eval_steps,
        eval_step_size=config.eval_step_size or None,
        seed=config.seed,
        **config.framework_params,
    )
    return FRAMEWORKS[config.framework](classifier, **kwargs)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """SGD (decoupled weight decay) or Adam with the configured LR schedule."""
    lr = make_lr_schedule(
        config.lr_schedule,
        config.lr,
        config.epochs,
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


def _checkpoint(trainer: keras.Model, epoch: tf.Variable) -> tf.train.Checkpoint:
    generators = {
        name: getattr(trainer, name).rng
        for name in ("attack", "eval_attack")
        if hasattr(getattr(trainer, name, None), "rng")
    }
    return tf.train.Checkpoint(
        classifier=trainer.classifier,
        optimizer=trainer.optimizer,
        epoch=epoch,
        **generators,
    )


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
    clean = robust = 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        clean += int(np.sum(np.argmax(classifier.predict_on_batch(xb), 1) == yb))
        adv = pgd(classifier, xb, yb).numpy()
        robust += int(np.sum(np.argmax(classifier.predict_on_batch(adv), 1) == yb))
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
    """Trains, checkpoints every epoch, evaluates and writes the outputs.

    Args:
        config: A `TrainConfig` (validated here before any compute).
        extra_callbacks: Keras callbacks added to the configured ones.

    Returns:
        The metrics dictionary also written to `metrics.json`.
    """
    config.validate()
    keras.utils.set_random_seed(config.seed)
    if config.precision != "float32":
        keras.mixed_precision.set_global_policy(config.precision)
    data = load_dataset(config.dataset, config.data_dir)
    x_test, y_test = to_numpy(data.test, config.n_eval or None)
    validate_images(x_test, data.input_shape, name="test images")
    validate_labels(y_test, data.num_classes, len(x_test))
    train = data.train.take(config.n_train) if config.n_train else data.train
    n_train = int(train.reduce(0, lambda n, _: n + 1))
    if n_train == 0:
        raise ValueError(f"The training split of {config.dataset!r} is empty")
    steps_per_epoch = int(np.ceil(n_train / config.batch_size))

    strategy = make_strategy(config.strategy)
    with strategy.scope():
        trainer = build_trainer(config, data)
        trainer.compile(
            optimizer=make_optimizer(config, steps_per_epoch),
            jit_compile=config.jit_compile,
        )
        trainer.build((None, *data.input_shape))
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        trainer.optimizer.build(trainer.trainable_variables)

    os.makedirs(config.output_dir, exist_ok=True)
    metrics_path = os.path.join(config.output_dir, "metrics.json")
    ckpt = _checkpoint(trainer, epoch_var)
    manager = tf.train.CheckpointManager(
        ckpt, os.path.join(config.output_dir, "checkpoints"), max_to_keep=2
    )
    history: dict = {}
    if config.resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        if os.path.exists(metrics_path):
            with open(metrics_path) as f:
                history = json.load(f).get("history", {})
        if config.verbose:
            print(f"Resumed from {manager.latest_checkpoint} at epoch {int(epoch_var.numpy())}")

    callbacks = [*make_callbacks(config, trainer, data), *extra_callbacks]
    started = time.time()
    for epoch in range(int(epoch_var.numpy()), config.epochs):
        epoch_data = batches(
            train,
            config.batch_size,
            shuffle=True,
            augment=data.augment,
            seed=config.seed * 100_003 + epoch,
        )
        result = trainer.fit(
            epoch_data,
            initial_epoch=epoch,
            epochs=epoch + 1,
            callbacks=callbacks,
            shuffle=False,
            verbose=config.verbose,
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        epoch_var.assign(epoch + 1)
        manager.save()
        write_json(metrics_path, {"config": dataclasses.asdict(config), "history": history})
        if trainer.stop_training:
            break
    train_seconds = time.time() - started

    final = evaluate_robustness(
        trainer.classifier,
        x_test,
        y_test,
        eps=config.eps,
        step_size=trainer.eval_step_size,
        steps=config.eval_steps,
        norm=config.norm,
        seed=config.seed,
    )
    model_path = os.path.join(config.output_dir, "model.keras")
    write_atomic(model_path, trainer.classifier.save, suffix=".keras")
    metrics = {
        "config": dataclasses.asdict(config),
        "history": history,
        "train_seconds": train_seconds,
        "test": final,
        "model_path": model_path,
    }
    write_json(metrics_path, metrics)
    return metrics


def make_callbacks(config: TrainConfig, trainer: keras.Model, data) -> list:
    """Callbacks named in `config.callbacks` (see `he_keras.training.CALLBACKS`)."""
    from he_keras.training import CALLBACKS

    return [CALLBACKS[name](config, trainer, data) for name in config.callbacks]
