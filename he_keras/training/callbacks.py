"""Training callbacks: per-epoch training-state logs, TensorBoard scalars and
FastAT's catastrophic-overfitting early stop."""

from __future__ import annotations

from typing import Any, Optional

import os

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from he_keras.attacks.core import ProjectedGradientAttack
from he_keras.defaults import probe_step_size
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
    cross-entropy, inference mode) attacks a fixed training batch. If the
    robust accuracy falls by more than `max_drop` (absolute) below that of
    the previous epoch, training stops and the classifier gets back the
    weights it had after the previous epoch (the last ones that passed the
    check). The reference code checks the first batch of each epoch's
    shuffled order; a fixed batch makes the epochs comparable.

    Args:
        x: The training batch to attack, images in [0, 1].
        y: Its integer labels.
        eps: Radius of the check (the training eps).
        step_size: PGD step (None: `eps / 4`, 2/255 at eps 8/255).
        steps: PGD steps (5).
        max_drop: Largest tolerated drop of robust accuracy (0.2).
        seed: Seed of the PGD random start.

    Example:

    ```python
    stop = CatastrophicOverfittingStop(x_train[:128], y_train[:128], eps=8 / 255)
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
        max_drop: float = 0.2,
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
        if not 0.0 <= float(max_drop) <= 1.0:
            raise ValueError(f"`max_drop` must lie in [0, 1]. Received: max_drop={max_drop!r}")
        self.x = x
        self.y = y
        self.eps = float(eps)
        self.step_size = float(probe_step_size(eps) if step_size is None else step_size)
        self.steps = int(steps)
        self.max_drop = float(max_drop)
        self.seed = seed
        self.attack = ProjectedGradientAttack(
            eps=self.eps, step_size=self.step_size, steps=self.steps, seed=seed
        )
        self.accuracies: list = []
        self.best_weights: Optional[list] = None
        self.stopped_epoch: Optional[int] = None

    def _classifier(self) -> keras.Model:
        return getattr(self.model, "classifier", self.model)

    def robust_accuracy(self) -> float:
        """PGD accuracy of the current classifier on the fixed batch."""
        classifier = self._classifier()
        x_adv = self.attack(classifier, self.x, self.y)
        logits = classifier(x_adv, training=False)
        return float(np.mean(np.argmax(np.asarray(logits), axis=1) == self.y))

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
            "seed": self.seed,
        }


def fastat_early_stop_callback(
    config: Any, trainer: keras.Model, data: Any
) -> CatastrophicOverfittingStop:
    """`--callbacks=fastat_early_stop`: PGD-5 on the first training batch (test-time preprocessing)."""
    from he_keras.data import to_numpy

    x, y = to_numpy(data.probe_pool, config.batch_size)
    return CatastrophicOverfittingStop(x, y, eps=config.eps, seed=config.seed)
