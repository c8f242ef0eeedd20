"""Training callbacks: per-epoch training-state logs, where a fit's time
goes, TensorBoard scalars and FastAT's catastrophic-overfitting early stop."""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from he_keras.attacks.core import ProjectedGradientAttack
from he_keras.defaults import (
    CO_FALSE_ALARM,
    CO_MAX_DROP,
    overfitting_probe_size,
    probe_step_size,
)
from he_keras.models.heads import find_head


class TrainingStateLogs(keras.callbacks.Callback):
    """Adds the learning rate and the HE scale `s` to every epoch's logs.

    Both are read when the epoch ends (the learning rate of the optimizer's
    next update; the scale the head has, which HE-LIS / HE-CMP change), so
    the progress bar, `History`, `metrics.json` and TensorBoard see them
    next to the losses and accuracies. Place it before the callbacks that
    read the logs. `he_scale` is logged only for HE / m-HE heads.

    Example:

    ```python
    trainer.fit(data, epochs=10, callbacks=[TrainingStateLogs(), keras.callbacks.CSVLogger("log.csv")])
    ```
    """

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if logs is None:
            return
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        logs["learning_rate"] = float(np.asarray(optimizer.learning_rate))
        head = find_head(getattr(self.model, "classifier", self.model))
        if head is not None:
            logs["he_scale"] = float(np.asarray(head.scale))


class RunTimes(keras.callbacks.Callback):
    """Where a `fit`'s wall time goes: its first compiled call, its epochs, the rest.

    Put it first among the callbacks: an epoch then ends before the other
    callbacks' epoch-end work (checkpoints, `metrics.json`, TensorBoard),
    which counts as time outside the epochs. It has no batch-end hook, so
    Keras keeps dispatching those of the other callbacks asynchronously.

    Example:

    ```python
    times = RunTimes()
    trainer.fit(data, epochs=10, callbacks=[times, ...])
    times.result()["first_call_seconds"]
    ```
    """

    def __init__(self) -> None:
        super().__init__()
        self._total: Optional[float] = None

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self._began = time.perf_counter()
        self._total = None
        self._calls = 0
        self._first_call: Optional[float] = None
        self._epochs: list = []

    def _first_call_ended(self) -> None:
        # Whatever comes first after the first call: the next call, the
        # validation pass, the end of the epoch (one call per epoch).
        if self._calls == 1 and self._first_call is None:
            self._first_call = time.perf_counter() - self._began

    def on_train_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None:
        self._first_call_ended()
        self._calls += 1

    def on_test_begin(self, logs: Optional[dict] = None) -> None:
        self._first_call_ended()

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._epoch_began = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._first_call_ended()
        self._epochs.append(time.perf_counter() - self._epoch_began)

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        self._total = time.perf_counter() - self._began

    def result(self) -> Optional[dict]:
        """The last `fit`'s times (None before one has ended).

        Returns:
            `{"first_call_seconds": the first compiled call, tracing included
            (None if no step ran), "epoch_seconds": each epoch from its
            start to its end (validation included), "outside_epochs_seconds":
            the rest of the fit (the other callbacks' epoch-end work such as
            checkpoints, and starting each epoch's data)}`.
        """
        if self._total is None:
            return None
        return {
            "first_call_seconds": self._first_call,
            "epoch_seconds": list(self._epochs),
            "outside_epochs_seconds": self._total - sum(self._epochs),
        }


class EpochSummaries(keras.callbacks.Callback):
    """Writes every epoch's logs as TensorBoard scalars, without TensorBoard.

    `keras.callbacks.TensorBoard` needs the `tensorboard` package, which
    TensorFlow 2.21 no longer installs; this callback writes the same event
    files with TensorFlow alone (`tf.summary.write` with the scalar plugin's
    metadata): `<log_dir>/train` gets `epoch_<name>` for the training logs,
    `<log_dir>/validation` the `val_` logs without the prefix, at step
    `epoch` (so a resumed run continues the curves). Open them with
    `tensorboard --logdir <log_dir>`.

    Args:
        log_dir: Directory of the event files.

    Example:

    ```python
    trainer.fit(data, epochs=10, callbacks=[TrainingStateLogs(), EpochSummaries("runs/x/logs")])
    ```
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__()
        self.log_dir = log_dir
        self._writers: dict = {}
        self._metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        )

    def _writer(self, split: str) -> Any:
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(
                os.path.join(self.log_dir, split)
            )
        return self._writers[split]

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        splits: dict = {}
        for name, value in (logs or {}).items():
            split, name = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            splits.setdefault(split, {})[name] = value
        for split, values in splits.items():
            writer = self._writer(split)
            with writer.as_default():
                for name, value in values.items():
                    tf.summary.write(
                        f"epoch_{name}",
                        tf.constant(float(value), tf.float32),
                        step=int(epoch),
                        metadata=self._metadata,
                    )
            writer.flush()

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


@keras.saving.register_keras_serializable(package="he_keras")
class CatastrophicOverfittingStop(keras.callbacks.Callback):
    """Early stop of FastAT (Wong et al., 2020) when PGD accuracy collapses.

    After every epoch, PGD (`steps` steps of `step_size`, uniform start,
    cross-entropy, inference mode) attacks a fixed probe of training images.
    If the robust accuracy falls by more than `max_drop` (absolute) below
    that of the previous epoch, training stops and the classifier gets back
    the weights it had after the previous epoch (the last ones that passed
    the check). The reference code checks the first batch of each epoch's
    shuffled order; a fixed probe, attacked from the same random start at
    every check, makes two epochs' accuracies differ only by the model.

    The probe must hold at least `overfitting_probe_size(max_drop,
    false_alarm)` images (`he_keras.defaults`; 346 at the defaults): then,
    by Hoeffding's inequality on the paired per-image differences, a model
    whose robust accuracy on the training split did not drop sets the check
    off with probability at most `false_alarm`. With one 64-image batch a
    drop of 0.2 is within noise.

    Args:
        x: The probe images, in [0, 1], drawn at random from the training split.
        y: Their integer labels.
        eps: Radius of the check (the training eps).
        step_size: PGD step (None: `eps / 4`, 2/255 at eps 8/255).
        steps: PGD steps (5).
        max_drop: Largest tolerated drop of robust accuracy, in (0, 1] (0.2).
        false_alarm: Per-check false-alarm rate the probe must reach, in
            (0, 1) (1e-3).
        batch_size: Images attacked per PGD call (None: the whole probe at once).
        seed: Seed of the PGD random start (None: drawn once, non-deterministically).

    Raises:
        ValueError: if `x` holds fewer images than `overfitting_probe_size`
            requires, or an argument is out of range.

    Example:

    ```python
    n = overfitting_probe_size(0.2, 1e-3)  # 346
    stop = CatastrophicOverfittingStop(x_train[:n], y_train[:n], eps=8 / 255, batch_size=128)
    trainer.fit(data, epochs=30, callbacks=[stop])
    ```
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        eps: float,
        step_size: Optional[float] = None,
        steps: int = 5,
        max_drop: float = CO_MAX_DROP,
        false_alarm: float = CO_FALSE_ALARM,
        batch_size: Optional[int] = None,
        seed: Optional[int] = 0,
    ) -> None:
        super().__init__()
        x = np.asarray(x, np.float32)
        y = np.asarray(y).reshape(-1).astype(np.int32)
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(
                "`x` and `y` must hold the same non-zero number of examples. "
                f"Received: {len(x)} images and {len(y)} labels"
            )
        needed = overfitting_probe_size(max_drop, false_alarm)
        if len(x) < needed:
            raise ValueError(
                f"The catastrophic-overfitting check needs at least {needed} probe images "
                f"for max_drop={max_drop!r} at false_alarm={false_alarm!r} (Hoeffding: "
                f"ceil(2 ln(1/false_alarm) / max_drop^2)). Received: {len(x)} images. "
                "Pass more images, or a larger `max_drop` or `false_alarm`"
            )
        if batch_size is not None and not int(batch_size) >= 1:
            raise ValueError(f"`batch_size` must be >= 1 or None. Received: batch_size={batch_size!r}")
        self.x = x
        self.y = y
        self.eps = float(eps)
        self.step_size = float(probe_step_size(eps) if step_size is None else step_size)
        self.steps = int(steps)
        self.max_drop = float(max_drop)
        self.false_alarm = float(false_alarm)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.seed = seed
        self.attack = ProjectedGradientAttack(
            eps=self.eps, step_size=self.step_size, steps=self.steps, seed=seed
        )
        # Every check rewinds the attack's generator to this state: the same
        # random start, whatever the number of checks before.
        self._start_state = self.attack.rng.state.numpy()
        self.accuracies: list = []
        self.best_weights: Optional[list] = None
        self.stopped_epoch: Optional[int] = None

    def _classifier(self) -> keras.Model:
        return getattr(self.model, "classifier", self.model)

    def robust_accuracy(self) -> float:
        """PGD accuracy of the current classifier on the probe.

        Returns:
            The share of probe images still classified correctly after the
            attack, which starts from the same random point at every call.
        """
        classifier = self._classifier()
        self.attack.rng.reset(self._start_state)
        chunk = self.batch_size or len(self.x)
        correct = 0
        for start in range(0, len(self.x), chunk):
            x, y = self.x[start : start + chunk], self.y[start : start + chunk]
            logits = classifier(self.attack(classifier, x, y), training=False)
            correct += int(np.sum(np.argmax(np.asarray(logits), axis=1) == y))
        return correct / len(self.x)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        accuracy = self.robust_accuracy()
        if logs is not None:
            logs["check_pgd_accuracy"] = accuracy
        previous = self.accuracies[-1] if self.accuracies else 0.0
        if self.best_weights is not None and previous - accuracy > self.max_drop:
            self._classifier().set_weights(self.best_weights)
            self.model.stop_training = True
            self.stopped_epoch = int(epoch)
            return
        self.accuracies.append(accuracy)
        self.best_weights = self._classifier().get_weights()

    @classmethod
    def from_config(cls, config: dict) -> "CatastrophicOverfittingStop":
        return cls(**config)

    def get_config(self) -> dict:
        return {
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "eps": self.eps,
            "step_size": self.step_size,
            "steps": self.steps,
            "max_drop": self.max_drop,
            "false_alarm": self.false_alarm,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }


def fastat_early_stop_callback(
    config: Any, trainer: keras.Model, data: Any
) -> CatastrophicOverfittingStop:
    """`--callbacks=fastat_early_stop`: PGD-5 on the first `overfitting_probe_size()` training images.

    Args:
        config: The run's `TrainConfig` (`eps`, `batch_size`, `seed`).
        trainer: The trainer (unused; the callback reads its model from Keras).
        data: The `Dataset`; the probe is the first images of
            `data.probe_pool` (the training split preprocessed as test
            data) in their stored order, a random sample when that order is
            not sorted (the embedded datasets' split is shuffled).

    Returns:
        A `CatastrophicOverfittingStop` with `CO_MAX_DROP` (0.2) and
        `CO_FALSE_ALARM` (1e-3), 346 probe images attacked `batch_size` at a time.

    Raises:
        ValueError: if the training split holds fewer images than the probe needs.

    Example:

    ```python
    stop = CALLBACKS["fastat_early_stop"](config, trainer, data)
    ```
    """
    from he_keras.data import to_numpy

    x, y = to_numpy(data.probe_pool, overfitting_probe_size(CO_MAX_DROP, CO_FALSE_ALARM))
    return CatastrophicOverfittingStop(
        x, y, eps=config.eps, max_drop=CO_MAX_DROP, false_alarm=CO_FALSE_ALARM,
        batch_size=config.batch_size, seed=config.seed,
    )
