"""A training run's settings: `TrainConfig`, its validation and resume policy.

Every setting is a field of `TrainConfig` with its one default and its one
help text (`dataclasses.field` metadata); `apps/train.py` generates its flags
from these fields (`he_keras.runs.flags`), so a flag and its setting cannot
drift apart. The framework hyperparameters (`framework_params`) have their
flags described in `FRAMEWORK_PARAMETERS`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from he_keras.attacks.core import NORMS, RANDOM_STARTS
from he_keras.data import EMBEDDED
from he_keras.data.tfds_datasets import TFDS_DATASETS
from he_keras.defaults import DEFAULT_SCALE, DIGITS_EPS, EVAL_PGD_STEPS, MARGIN_OF_HEAD, margin_of
from he_keras.files import jsonable, read_json
from he_keras.models import HEADS, MODELS
from he_keras.training import CALLBACKS, FRAMEWORKS
from he_keras.training.lr_schedules import LR_SCHEDULES

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Settings a resumed run may change: they do not alter what the remaining
# epochs compute (more epochs extend the run). Any other difference from the
# checkpointed run's settings is refused.
RESUMABLE_CHANGES = frozenset({
    "checkpoint_seconds", "data_dir", "epochs", "eval_step_size", "eval_steps", "jit_compile",
    "n_eval", "output_dir", "resume", "strategy", "tensorboard", "verbose",
})
# Flags of the frameworks' hyperparameters (`TrainConfig.framework_params`):
# name -> (type, help). A flag left unset leaves the framework's default.
FRAMEWORK_PARAMETERS = {
    "beta": (float, "TRADES / HAT KL weight, ALP pairing weight."),
    "gamma": (float, "HAT helper-loss weight."),
    "helper_step": (float, "HAT helper-example extrapolation h."),
    "replays": (int, "FreeAT minibatch replays m."),
    "helper_model": (str, "HAT: .keras standard model giving helper labels (default: trained first, "
                          "in <output_dir>/helper)."),
}


def _setting(default, help: str, **kwargs):
    """A `TrainConfig` field: its default and the help text of its flag."""
    if isinstance(default, (list, tuple, dict)):
        kwargs["default_factory"] = lambda: type(default)(default)
    else:
        kwargs["default"] = default
    return dataclasses.field(metadata={"help": help}, **kwargs)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; `validate()` checks it before compute.

    Each field is a flag of `apps/train.py` with the same name, default and
    help (`framework_params` is spread over the flags of
    `FRAMEWORK_PARAMETERS`).

    Example:

    ```python
    config = TrainConfig(framework="trades", epochs=3, output_dir="/tmp/run")
    config.validate()
    ```
    """

    dataset: str = _setting("digits", "digits, mnist5k, or a tfds dataset: mnist, cifar10, cifar100, "
                                      "svhn_cropped, imagenette[/<config>], imagenet2012.")
    data_dir: Optional[str] = _setting(None, "tfds data directory.")
    n_train: int = _setting(0, "Use only the first N training examples (0 = all).")
    model: str = _setting("small_cnn", "Backbone name (see he_keras.models.MODELS).")
    depth: int = _setting(34, "WideResNet depth (6n+4).")
    width: int = _setting(10, "WideResNet widening factor.")
    head: str = _setting("he", "linear | he | mhe.")
    s: float = _setting(DEFAULT_SCALE, "Scale s of the HE / m-HE logits.")
    m: float = _setting(MARGIN_OF_HEAD, "HE margin m; -1 = the head's default (0.2 HE, 0.1 m-HE, 0 linear).")
    feature_norm: bool = _setting(True, "Feature normalization (FN) in the HE head.")
    weight_norm: bool = _setting(True, "Weight normalization (WN) in the HE head.")
    framework: str = _setting("pgdat", "Adversarial-training framework (see he_keras.training.FRAMEWORKS).")
    eps: float = _setting(DIGITS_EPS, "Attack radius in pixel units ([0,1] images).")
    step_size: Optional[float] = _setting(
        None, "Step size of the training attack; default: the framework's own "
              "(PGD 2.5*eps/steps, FastAT 1.25*eps, FreeAT eps).")
    steps: int = _setting(7, "Steps of the training attack.")
    eps_warmup_epochs: float = _setting(
        0.0, "Epochs over which the training attack's eps (and step size) grows linearly from 0; 0 = none.")
    norm: str = _setting("linf", "linf | l2.")
    random_start: str = _setting("", "zero | uniform | normal; empty = framework default.")
    attack_bn_training: Optional[bool] = _setting(
        None, "Craft training attacks with BN in training mode; default: the framework's own "
              "(FastAT yes, others no).")
    framework_params: dict = _setting({}, "The framework's hyperparameters (flags: FRAMEWORK_PARAMETERS).")
    epochs: int = _setting(15, "Training epochs (FreeAT: the paper's budget, ceil(epochs / replays) passes).")
    batch_size: int = _setting(64, "Global batch size.")
    steps_per_epoch: int = _setting(
        0, "Training batches per epoch (0 = a pass over the training split); fewer make every epoch "
           "that fraction of the data, and each validation pass the same fraction of its split.")
    steps_per_execution: int = _setting(
        1, "Training steps per compiled call (Keras compile): fewer Python round trips per step; "
           "must divide the steps per epoch; callbacks' batch hooks then run once per call.")
    optimizer: str = _setting("adam", "sgd | adam.")
    lr: float = _setting(2e-3, "(Peak) learning rate.")
    momentum: float = _setting(0.9, "SGD momentum.")
    nesterov: bool = _setting(False, "Nesterov momentum.")
    weight_decay: float = _setting(0.0, "Decoupled weight decay.")
    lr_schedule: str = _setting("constant", "constant | piecewise | cosine | onecycle.")
    lr_decay_epochs: Sequence[float] = _setting((), "Epochs of the piecewise decays, e.g. 75,90.")
    lr_decay_factor: float = _setting(0.1, "Multiplier at each piecewise decay.")
    seed: int = _setting(0, "Random seed.")
    output_dir: str = _setting("runs/train", "Run directory (checkpoints, model.keras, metrics.json).")
    checkpoint_seconds: float = _setting(
        30.0, "Checkpoint after the first epoch that ends this many seconds (wall time) after the previous "
              "checkpoint, after the last epoch and after an early stop; 0 = every epoch (always with "
              "multi_worker). A killed run repeats the epochs since its last checkpoint and the interrupted one.")
    resume: bool = _setting(
        True, "Resume from the run directory's last checkpoint (--noresume: refuse a directory that has one).")
    strategy: str = _setting("default", "default | mirrored | multi_worker (TF_CONFIG).")
    jit_compile: bool = _setting(False, "XLA-compile the train step (slower for conv nets on CPU).")
    precision: str = _setting("float32", "float32 | mixed_bfloat16 | mixed_float16.")
    eval_steps: int = _setting(EVAL_PGD_STEPS, "PGD steps of the final evaluation on the test split.")
    eval_step_size: float = _setting(
        0.0, "PGD step size of validation and the final evaluation "
             "(0 = 2.5*eps/steps, he_keras.defaults.pgd_step_size).")
    n_eval: int = _setting(0, "Test examples of the final evaluation (0 = all).")
    validation_split: float = _setting(
        0.1, "Share of the training data held out (seeded, stratified) for validation; 0 = none.")
    val_steps: int = _setting(10, "PGD steps of the per-epoch validation (val_adv_accuracy).")
    train_clean_accuracy: bool = _setting(
        True, "Log clean_accuracy during training; PGD-AT, FastAT and FreeAT pay one more forward pass "
              "per step for it, which --notrain_clean_accuracy skips (their logs then lack it; TRADES, ALP, "
              "HAT and standard log it from their own clean pass, and validation logs val_clean_accuracy).")
    tensorboard: bool = _setting(True, "Write TensorBoard logs to <output_dir>/logs.")
    callbacks: Sequence[str] = _setting((), "Training callbacks (see he_keras.training.CALLBACKS).")
    verbose: int = _setting(2, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")
    init_model: str = _setting(
        "", "A .keras model whose weights start the run (adversarial fine-tuning); a resumed run ignores it.")

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
            ("steps_per_epoch", self.steps_per_epoch >= 0, ">= 0 (0 = the whole split)"),
            ("steps_per_execution", self.steps_per_execution >= 1, ">= 1"),
            ("checkpoint_seconds", self.checkpoint_seconds >= 0, ">= 0 (0 = every epoch)"),
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
        if self.steps_per_execution > 1 and self.eps_warmup_epochs:
            raise ValueError(
                "The eps warm-up sets the attack's radius before every batch, which "
                "steps_per_execution > 1 would skip. Received: steps_per_execution="
                f"{self.steps_per_execution} with eps_warmup_epochs={self.eps_warmup_epochs!r}"
            )
        if self.steps_per_execution > 1 and self.strategy == "multi_worker":
            raise ValueError(
                "The multi-worker loop runs one step per call. Received: steps_per_execution="
                f"{self.steps_per_execution} with strategy='multi_worker'"
            )
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
