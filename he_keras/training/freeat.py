"""FreeAT, "Adversarial training for free!" (Shafahi et al., 2019)."""

from __future__ import annotations

from typing import Any, Optional

import keras
import tensorflow as tf

from he_keras.attacks.core import ascent_direction, project
from he_keras.defaults import NATURAL_IMAGE_EPS
from he_keras.training.base import AdversarialTrainer


@keras.saving.register_keras_serializable(package="he_keras")
class FreeAT(AdversarialTrainer):
    """FreeAT: `replays` updates per minibatch, one backward pass each.

    A perturbation buffer `delta` starts at zero once and is never reset: it
    carries over between the replays of a minibatch *and* between minibatches
    (rows `[:batch]` are used when a batch is smaller than the buffer). Each
    replay runs the classifier (BN in training mode) on `clip(x + delta, 0,
    1)`; the one backward pass of the classification loss gives both the
    weight gradient (applied by the optimizer) and the input gradient, which
    moves the buffer by `step_size * sign(grad)` (projected onto the eps-ball;
    the stored buffer is not clipped to the image box). BN always runs in
    training mode (`attack_training` does not apply). For HE / m-HE heads
    the loss is the HE margin loss for both, as in the HE reference code.

    The input gradient is taken at the clipped input. The reference code
    differentiates through the clamp instead, whose gradient is zero where
    `x + delta` leaves [0, 1]: the buffer then never moves at saturated
    pixels. That is rare on CIFAR-10 but freezes most of the buffer on
    digits/MNIST (mostly 0 or 1 pixels), where it left PGD-20 accuracy near
    0 (measured with the HE head: 1 % vs 30 % after 8 passes at eps 0.3).

    Epochs are the paper's budget: a run of `N` epochs makes `ceil(N /
    replays)` passes over the data (each minibatch replayed `replays` times),
    so it costs about as many forward/backward passes as `N` epochs of
    standard training. `he_keras.runs.run` (and `apps/train.py
    --epochs`) reads `epochs` that way; `fit` itself counts passes, so pass
    `epochs=ceil(N / replays)` when calling it directly. The optimizer makes
    `replays` updates per batch, which `updates_per_batch` reports so
    learning-rate schedules count them.

    Under mixed precision a replay whose input gradient is not finite (a
    float16 overflow under loss scaling, when the optimizer skips its update
    too) leaves the buffer unchanged: `sign(NaN)` would survive the clip and
    poison every later batch. Under `tf.distribute` each replica keeps its
    own buffer. The buffer is training state: `checkpoint_state()` hands it
    to the run's checkpoint, so a resumed run continues with it (`.keras`
    files do not hold it).

    Args:
        classifier: The model to train; its input shape must be known.
        replays: Number of replays `m` of each minibatch.
        eps: L-inf radius of the buffer.
        step_size: Buffer step (None: `eps`, as FreeAT).
        steps: Must be 1 (one step per replay).
        **kwargs: Other `AdversarialTrainer` arguments.

    Example:

    ```python
    trainer = FreeAT(classifier, replays=4, eps=4 / 255)
    trainer.compile(optimizer="sgd")
    trainer.fit(dataset, epochs=23)   # the paper's 90 epochs: ceil(90 / 4) passes
    ```
    """

    hyperparameters: tuple = ("replays",)

    def __init__(
        self,
        classifier: keras.Model,
        replays: int = 8,
        eps: float = NATURAL_IMAGE_EPS,
        step_size: Optional[float] = None,
        steps: int = 1,
        **kwargs: Any,
    ) -> None:
        if isinstance(replays, bool) or int(replays) != replays or replays < 1:
            raise ValueError(f"`replays` must be an integer >= 1. Received: replays={replays!r}")
        if steps != 1:
            raise ValueError(
                f"FreeAT takes one buffer step per replay. Received: steps={steps!r}"
            )
        if kwargs.get("norm", "linf") != "linf":
            raise ValueError(f"FreeAT is L-inf only. Received: norm={kwargs['norm']!r}")
        super().__init__(
            classifier,
            eps=eps,
            step_size=eps if step_size is None else step_size,
            steps=steps,
            **kwargs,
        )
        input_shape = getattr(classifier, "input_shape", None)
        if not input_shape or any(d is None for d in input_shape[1:]):
            raise ValueError(
                "FreeAT needs a classifier with a known input shape. "
                f"Received: input_shape={input_shape}"
            )
        self.replays = int(replays)
        # One buffer per replica (ON_READ); rows grow to the largest batch.
        self.perturbation = tf.Variable(
            tf.zeros([0, *input_shape[1:]]),
            shape=tf.TensorShape([None, *input_shape[1:]]),
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            name="free_perturbation",
        )

    @property
    def updates_per_batch(self) -> int:
        return self.replays

    def checkpoint_state(self) -> dict:
        """The buffer (every local replica's copy) for the run's checkpoint."""
        replicas = self.distribute_strategy.experimental_local_results(self.perturbation)
        return {**super().checkpoint_state(), "free_perturbation": list(replicas)}

    def _buffer(self, batch: tf.Tensor) -> tf.Tensor:
        """The stored perturbation, zero-padded to at least `batch` rows."""
        stored = self.perturbation.read_value()
        missing = tf.maximum(batch - tf.shape(stored)[0], 0)
        padding = tf.zeros(
            tf.concat([[missing], tf.shape(stored)[1:]], 0), stored.dtype
        )
        return tf.concat([stored, padding], 0)

    def train_step(self, data: Any) -> dict:
        x, y, sample_weight = self.unpack(data)
        x = tf.cast(x, tf.float32)
        batch = tf.shape(x)[0]
        buffer = self._buffer(batch)
        # The eps warm-up's share of eps; the stored perturbation is
        # re-projected onto the current (possibly smaller) ball.
        budget = tf.cast(self.attack.budget_scale, tf.float32)
        delta = project(buffer[:batch], self.eps * budget, self.norm)
        for _ in range(self.replays):
            x_adv = tf.clip_by_value(x + delta, 0.0, 1.0)
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                adv_logits = self.classifier(x_adv, training=True)
                loss = self.reduce_loss(
                    self.classification_loss(y, adv_logits), sample_weight
                )
                scaled = self.optimizer.scale_loss(loss)
            (grad,) = self.apply_gradients(tape, scaled, sources=(x_adv,))
            step = self.step_size * budget * ascent_direction(grad, self.norm)
            # An overflowed (loss-scaled) gradient moves nothing, as the
            # optimizer skips that update.
            finite = tf.reduce_all(tf.math.is_finite(grad))
            delta = tf.where(finite, project(delta + step, self.eps * budget, self.norm), delta)
        self.perturbation.assign(tf.concat([delta, buffer[batch:]], 0))
        clean_logits = self.clean_logits_for_metrics(x)
        return self.update_metrics(loss, y, clean_logits, adv_logits, sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "replays": self.replays}
