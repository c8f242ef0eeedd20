"""Resumable runs: the training checkpoint, its per-epoch Keras callback, and
a restore that falls back past an unreadable newest checkpoint."""

from __future__ import annotations

import glob
import numbers
import time
from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from he_keras.files import write_json


def training_checkpoint(
    trainer: keras.Model, epoch: tf.Variable, stopped: Optional[tf.Variable] = None
) -> tf.train.Checkpoint:
    """Everything a resumed run needs to continue as if never stopped.

    Args:
        trainer: The compiled, built `AdversarialTrainer`.
        epoch: Variable counting the finished epochs.
        stopped: Optional boolean variable, True once a callback stopped the
            run early (a resumed run then trains no further).

    Returns:
        A checkpoint of the classifier (weights and HE scale), the optimizer
        (slots and `iterations`, which the LR schedule reads), the epoch, the
        attacks' `tf.random.Generator`s, the trainer's other state variables,
        such as the seed generators of dropout or noise layers, which a
        `tf.train.Checkpoint` of the classifier alone does not hold, and the
        framework's `checkpoint_state()` (FreeAT's perturbation buffer).
    """
    generators = {
        name: getattr(trainer, name).rng
        for name in ("attack", "eval_attack")
        if hasattr(getattr(trainer, name, None), "rng")
    }
    weights = {id(w) for w in trainer.weights}
    extra = trainer.checkpoint_state() if hasattr(trainer, "checkpoint_state") else {}
    if stopped is not None:
        extra["stopped"] = stopped
    return tf.train.Checkpoint(
        classifier=trainer.classifier,
        optimizer=trainer.optimizer,
        epoch=epoch,
        random_state=[v for v in trainer.variables if id(v) not in weights],
        **generators,
        **extra,
    )


def _files(prefix: str) -> str:
    """The data files of a checkpoint (or its index when they are missing)."""
    return ", ".join(sorted(glob.glob(prefix + ".data-*"))) or prefix + ".index"


def restore_newest_readable(
    checkpoint: tf.train.Checkpoint,
    manager: tf.train.CheckpointManager,
    warn: Callable[[str], None],
) -> Optional[str]:
    """Restores the newest checkpoint that reads back completely.

    Every tensor of a candidate is read (TensorFlow checks its length and
    CRC) before anything is restored, so a truncated or corrupted file is
    skipped, with one warning line naming it, and the previous checkpoint
    (a manager keeps two) is used instead.

    Args:
        checkpoint: The run's `training_checkpoint`.
        manager: The manager of the run's checkpoint directory.
        warn: Called with one line per skipped checkpoint.

    Returns:
        The restored checkpoint's path, or None when the run has none.

    Raises:
        ValueError: when checkpoints exist but none is readable.
    """
    skipped = []
    for path in reversed(manager.checkpoints):
        try:
            reader = tf.train.load_checkpoint(path)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)
        except (tf.errors.OpError, IndexError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            skipped.append(_files(path))
            warn(
                f"warning: checkpoint {_files(path)} is unreadable "
                f"({type(err).__name__}: {reason}); trying the previous one"
            )
            continue
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        except AssertionError as err:
            raise ValueError(
                f"The checkpoint {path!r} does not match this run's model and "
                f"trainer (written by another version?): {str(err).splitlines()[0]}"
            ) from err
        return path
    if skipped:
        raise ValueError(
            f"No usable checkpoint: {'; '.join(skipped)} cannot be read (truncated "
            "or corrupted). Remove the checkpoints directory to start the run "
            "again, or pass a new --output_dir"
        )
    return None


# Counters of Keras' stateful callbacks (EarlyStopping, ReduceLROnPlateau)
# that `on_train_begin` resets; saved every epoch so a resumed run goes on
# counting its patience.
CALLBACK_COUNTERS = ("wait", "best", "best_epoch", "cooldown_counter")


def callback_counters(callbacks: Sequence[keras.callbacks.Callback]) -> dict:
    """The numeric `CALLBACK_COUNTERS` of each callback, keyed by position and class."""
    state = {}
    for index, callback in enumerate(callbacks):
        values = {
            name: float(getattr(callback, name))
            for name in CALLBACK_COUNTERS
            if isinstance(getattr(callback, name, None), numbers.Number)
        }
        if values:
            state[f"{index}:{type(callback).__name__}"] = values
    return state


class EpochCheckpoint(keras.callbacks.Callback):
    """Ends every epoch with `metrics.json`, and training with a checkpoint.

    Put it last among the callbacks, so that it records the state every other
    callback left (weights restored by an early stop, a reduced learning
    rate, the logs they added). The history in `metrics.json` is written
    (atomically) before the checkpoint, so it always covers the checkpointed
    epochs; a `tf.train.CheckpointManager` writes the checkpoint atomically
    and keeps the last two. `metrics.json` also lists the patience counters
    of the other callbacks (`callback_counters`) after every epoch; a
    resumed run sets them back when training begins, so EarlyStopping and
    ReduceLROnPlateau count on across the resume (EarlyStopping's
    `restore_best_weights` copy is not kept).

    Checkpoints are written after any epoch that ends `interval_seconds` or
    more (wall time, validation and callbacks included) after the previous
    checkpoint or the start of training, after the fit's last epoch, after
    an epoch that stopped the run, and when training ends with epochs not
    yet checkpointed. A killed run repeats the epochs since its last
    checkpoint (less than the interval) and the interrupted one; a run of short epochs does not spend its time
    writing checkpoints (on the quickstart, whose epochs take about 0.5 s,
    one after every epoch cost about 0.8 s of a 20 s run). 0 checkpoints
    every epoch.

    Args:
        manager: Manager of a `training_checkpoint` holding `epoch`.
        epoch: The checkpoint's variable counting finished epochs.
        stopped: The checkpoint's boolean "stopped early" variable.
        metrics_path: Path of `metrics.json`.
        config: JSON-able run settings written beside the history.
        history: Per-epoch logs of the epochs before this run (a resume);
            extended in place.
        counters: `callback_counters` after each epoch before this run;
            extended in place.
        callbacks: The run's other callbacks, in order.
        interval_seconds: Least wall time between two checkpoints during
            training (0: after every epoch).
        clock: Seconds of a monotonic clock (a test's fake clock).
    """

    def __init__(
        self,
        manager: tf.train.CheckpointManager,
        epoch: tf.Variable,
        stopped: tf.Variable,
        metrics_path: str,
        config: dict,
        history: dict,
        counters: list,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        interval_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if not interval_seconds >= 0:
            raise ValueError(
                f"`interval_seconds` must be >= 0. Received: interval_seconds={interval_seconds!r}"
            )
        self.manager = manager
        self.epoch = epoch
        self.stopped = stopped
        self.metrics_path = metrics_path
        self.config = config
        self.history = history
        self.counters = counters
        self.callbacks = list(callbacks)
        self.interval_seconds = float(interval_seconds)
        self.clock = clock
        self._unsaved = False

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self._saved_at = self.clock()
        saved = self.counters[-1] if self.counters else {}
        for index, callback in enumerate(self.callbacks):
            for name, value in saved.get(f"{index}:{type(callback).__name__}", {}).items():
                setattr(callback, name, int(value) if name != "best" else value)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.counters.append(callback_counters(self.callbacks))
        self.epoch.assign(epoch + 1)
        self.stopped.assign(bool(self.model.stop_training))
        write_json(
            self.metrics_path,
            {"config": self.config, "history": self.history, "callback_counters": self.counters},
        )
        self._unsaved = True
        last = epoch + 1 >= (self.params or {}).get("epochs", 0)
        if last or self.model.stop_training or self.clock() - self._saved_at >= self.interval_seconds:
            self._save()

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        # A fit that ended before its `epochs` (e.g. capped by Keras' max_epochs).
        if self._unsaved:
            self._save()

    def _save(self) -> None:
        self.manager.save()
        self._saved_at = self.clock()
        self._unsaved = False
