"""Multi-worker training without `model.fit`: `train_step` through `strategy.run`.

`model.fit` under `tf.distribute.MultiWorkerMirroredStrategy` fails in Keras
3.15 (keras-team/keras#20585: Keras hands the per-replica batch to
`strategy.reduce` while building the model). `DistributedTrainLoop` drives
the trainer's own, unchanged `train_step` with public APIs only: the global
batches are distributed with `strategy.experimental_distribute_dataset`, each
step is `strategy.run(trainer.train_step)` inside a `tf.function`, and the
returned metrics are mean-reduced across all replicas of all workers.
`DistributedTrainLoop.fit` has `model.fit`'s signature for what the runner
uses (`epochs`, `initial_epoch`, `steps_per_epoch`, `callbacks`,
`validation_data`, `verbose`) and drives Keras callbacks through the same
hooks, in the same order, with the same progress bar, so checkpointing,
TensorBoard, EarlyStopping, HE-LIS / HE-CMP and the FastAT early stop behave
as under `fit`.

`apps/train.py --strategy=multi_worker` uses it; each worker reads its role
from the `TF_CONFIG` environment variable (see docs/DISTRIBUTED.md).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Optional, Sequence

import keras
import tensorflow as tf


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Sets DATA auto-sharding: every worker reads the same global batches and keeps its share.

    Chosen on purpose over FILE sharding (tf.data's AUTO tries it first for
    file-based input such as tfds): FILE sharding needs at least as many
    input files as workers and gives workers unequal numbers of examples,
    which a loop of static global batches cannot take, and it would make a
    worker's examples depend on the file layout instead of the seed. The
    price: each worker runs the whole input pipeline (reading, decoding and
    augmenting every global batch) and keeps its share, N times the input
    work for N workers; `bench/input_pipeline.py` compares the pipeline's
    rate with the adversarial training step's.

    Args:
        dataset: Global batches, identically ordered on every worker.

    Returns:
        The dataset with `AutoShardPolicy.DATA`.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process is the chief (or the only worker).

    The chief is the `chief` task, or worker 0 of a cluster without one.

    Args:
        strategy: The run's strategy.

    Returns:
        True for the chief and for strategies without a cluster.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if has_chief:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id) == 0


def worker_output_dir(output_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this worker writes checkpoints, `model.keras` and `metrics.json`.

    The chief writes to `output_dir`; every other worker also saves (so that
    all workers run the same program) but into
    `output_dir/<task_type>_<task_id>`, so workers sharing a file system never
    write the same file.

    Args:
        output_dir: The run directory of the command line.
        strategy: The run's strategy.

    Returns:
        The directory for this process.
    """
    if is_chief(strategy):
        return output_dir
    resolver = strategy.cluster_resolver
    return os.path.join(output_dir, f"{resolver.task_type}_{resolver.task_id}")


class DistributedTrainLoop:
    """Trains a Keras model one epoch at a time through `strategy.run`.

    Args:
        model: A compiled model whose `train_step` returns a dict of scalars
            (any `AdversarialTrainer`, whose attack budget `fit` restores on
            leaving), built in `strategy.scope()`.
        strategy: The strategy the model was built under (typically
            `MultiWorkerMirroredStrategy`).

    Example:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        trainer = TRADES(classifier, beta=6.0)
        trainer.compile(optimizer="adam")
    loop = DistributedTrainLoop(trainer, strategy)
    history = loop.fit(global_batches, epochs=30, steps_per_epoch=100)
    ```
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy) -> None:
        if getattr(model, "optimizer", None) is None:
            raise ValueError(
                f"Compile the model before training it. Received: model={model.name!r} "
                "without an optimizer"
            )
        self.model = model
        self.strategy = strategy
        self._train_step = tf.function(self._distributed(model.train_step))
        self._test_step = tf.function(self._distributed(model.test_step))

    def _distributed(self, step):
        def run(batch) -> dict:
            outputs = self.strategy.run(step, args=(batch,))
            return {
                name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for name, value in outputs.items()
            }

        return run

    def _run_epoch(self, batches, step, hooks, steps=None, training=True) -> dict:
        """One pass of `step` over `batches` with Keras' batch hooks."""
        begin, end = (
            (hooks.on_train_batch_begin, hooks.on_train_batch_end)
            if training
            else (hooks.on_test_batch_begin, hooks.on_test_batch_end)
        )
        self.model.reset_metrics()
        logs = None
        # zip asks the step counter first: no batch is drawn past `steps`.
        for index, batch in zip(range(steps) if steps else itertools.count(), batches):
            begin(index)
            logs = step(batch)
            end(index, logs)
            if training and self.model.stop_training:
                break
        if logs is None:
            raise ValueError(
                f"The {'training' if training else 'validation'} data gave no complete "
                "batch on this worker. Received: an empty dataset"
            )
        return {name: float(value) for name, value in logs.items()}

    def fit(
        self,
        dataset: tf.data.Dataset,
        epochs: int = 1,
        initial_epoch: int = 0,
        steps_per_epoch: Optional[int] = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        validation_data: Optional[tf.data.Dataset] = None,
        verbose: int = 0,
    ) -> keras.callbacks.History:
        """Trains epochs `initial_epoch .. epochs - 1`, like `model.fit`.

        Args:
            dataset: Global batches with a static batch size
                (`drop_remainder=True`), identically ordered on every worker
                (same shuffle seed); the strategy shards them. With
                `steps_per_epoch` one iterator runs through all epochs (as
                `fit` does), otherwise each epoch iterates `dataset` anew.
            epochs: Index of the last epoch plus one.
            initial_epoch: Epoch to start from (a resumed run).
            steps_per_epoch: Batches per epoch (None: all of `dataset`).
            callbacks: Keras callbacks.
            validation_data: Global batches evaluated with the model's
                `test_step` after every epoch, logged with a `val_` prefix.
            verbose: 0 silent, 1 progress bar, 2 one line per epoch.

        Returns:
            A `keras.callbacks.History` of the epochs run.
        """
        hooks = keras.callbacks.CallbackList(
            list(callbacks),
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=steps_per_epoch,
            model=self.model,
        )
        self.model.stop_training = False
        distributed = self.strategy.experimental_distribute_dataset(shard_by_data(dataset))
        iterator = iter(distributed) if steps_per_epoch else None
        hooks.on_train_begin()
        logs: Optional[dict] = None
        with getattr(self.model, "keeping_attack_budget", contextlib.nullcontext)():
            for epoch in range(initial_epoch, epochs):
                hooks.on_epoch_begin(epoch)
                batches = iterator if iterator is not None else distributed
                logs = self._run_epoch(batches, self._train_step, hooks, steps_per_epoch)
                if validation_data is not None:
                    hooks.on_test_begin()
                    val = self.strategy.experimental_distribute_dataset(shard_by_data(validation_data))
                    val_logs = self._run_epoch(val, self._test_step, hooks, training=False)
                    hooks.on_test_end(val_logs)
                    logs.update({f"val_{name}": value for name, value in val_logs.items()})
                hooks.on_epoch_end(epoch, logs)
                if self.model.stop_training:
                    break
            hooks.on_train_end(logs)  # inside, as in `fit`: callbacks still see the training budget
        return self.model.history
