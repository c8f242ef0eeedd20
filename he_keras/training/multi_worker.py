"""Multi-worker training without `model.fit`: `train_step` through `strategy.run`.

`model.fit` under `tf.distribute.MultiWorkerMirroredStrategy` fails in Keras
3.15 (keras-team/keras#20585: Keras hands the per-replica batch to
`strategy.reduce` while building the model). `DistributedTrainLoop` drives
the trainer's own, unchanged `train_step` with public APIs only: the global
batches are distributed with `strategy.experimental_distribute_dataset`, each
step is `strategy.run(trainer.train_step)` inside a `tf.function`, and the
returned metrics are mean-reduced across all replicas of all workers. Keras
callbacks get the usual epoch and batch hooks, so HE-LIS / HE-CMP and the
FastAT early stop work as under `fit`.

`apps/train.py --strategy=multi_worker` uses it; each worker reads its role
from the `TF_CONFIG` environment variable (see docs/DISTRIBUTED.md).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import keras
import tensorflow as tf


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
            (any `AdversarialTrainer`), built in `strategy.scope()`.
        strategy: The strategy the model was built under (typically
            `MultiWorkerMirroredStrategy`).

    Example:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        trainer = TRADES(classifier, beta=6.0)
        trainer.compile(optimizer="adam")
    loop = DistributedTrainLoop(trainer, strategy)
    for epoch in range(epochs):
        history = loop.fit_epoch(global_batches, epoch)
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
        self._step = tf.function(self._distributed_step)

    def _distributed_step(self, batch) -> dict:
        outputs = self.strategy.run(self.model.train_step, args=(batch,))
        return {
            name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in outputs.items()
        }

    def fit_epoch(
        self,
        dataset: tf.data.Dataset,
        epoch: int,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: int = 0,
    ) -> keras.callbacks.History:
        """Runs one epoch over `dataset`, like `model.fit(initial_epoch=epoch,
        epochs=epoch + 1)`.

        Args:
            dataset: Global batches with a static batch size
                (`drop_remainder=True`), identically ordered on every worker
                (same shuffle seed); the strategy shards them.
            epoch: Index of the epoch (for the callbacks).
            callbacks: Keras callbacks.
            verbose: 0 silent, otherwise one line per epoch.

        Returns:
            A `keras.callbacks.History` holding this epoch's logs.
        """
        history = keras.callbacks.History()
        hooks = keras.callbacks.CallbackList(
            [*callbacks, history], model=self.model, epochs=epoch + 1
        )
        self.model.stop_training = False
        self.model.reset_metrics()
        hooks.on_train_begin()
        hooks.on_epoch_begin(epoch)
        logs: Optional[dict] = None
        for step, batch in enumerate(self.strategy.experimental_distribute_dataset(dataset)):
            hooks.on_train_batch_begin(step)
            logs = self._step(batch)
            hooks.on_train_batch_end(step, logs)
        if logs is None:
            raise ValueError(
                "The training data gave no complete batch on this worker. "
                "Received: an empty dataset"
            )
        logs = {name: float(value) for name, value in logs.items()}
        hooks.on_epoch_end(epoch, logs)
        hooks.on_train_end(logs)
        if verbose:
            line = " - ".join(f"{name}: {value:.4f}" for name, value in logs.items())
            print(f"Epoch {epoch + 1}: {line}", flush=True)
        return history
