"""Eps warm-up: the training attack's radius grows linearly from 0 to eps.

Adversarial training at the full radius from the first step can stall at the
constant predictor (loss ln(classes) from the first epoch on): on MNIST-like
data at eps 0.25-0.3, plain PGD-AT with a linear head did so in 2 of 3 seeds
of this project's study (`docs/REPRODUCTION.md`). Growing the radius over the
first epochs, as interval bound propagation training does (Gowal et al.,
2018), lets the model learn the clean task first.

`EpsilonWarmup` sets the trainer's training-attack budget before every batch
to `min(1, (epoch + batch / steps_per_epoch) / warmup_epochs)` of eps (and of
the step size, so the step keeps its ratio to eps). The value depends on the
epoch and batch index only, so a resumed run trains with the same radii. The
per-epoch validation attack always uses the full eps, and
`AdversarialTrainer.fit` restores the budget it found when it returns or
raises.
"""

from __future__ import annotations

from typing import Optional

import keras


def warmup_fraction(epoch: int, batch: int, steps_per_epoch: Optional[int],
                    warmup_epochs: float) -> float:
    """Share of eps used for `batch` of `epoch` (both counted from 0).

    Args:
        epoch: Epoch index.
        batch: Batch index within the epoch.
        steps_per_epoch: Batches per epoch (None: unknown, the fraction then
            grows once per epoch).
        warmup_epochs: Epochs until the full eps (0: no warm-up).

    Returns:
        A float in [0, 1].

    Example:

    ```python
    warmup_fraction(1, 50, 100, 3.0)   # 0.5: epoch 1.5 of 3
    ```
    """
    if warmup_epochs <= 0:
        return 1.0
    progress = float(epoch) + (batch / steps_per_epoch if steps_per_epoch else 0.0)
    return min(1.0, progress / warmup_epochs)


@keras.saving.register_keras_serializable(package="he_keras")
class EpsilonWarmup(keras.callbacks.Callback):
    """Grows the training attack's eps linearly over the first epochs.

    Works with every `AdversarialTrainer` (it calls `set_attack_budget`) and
    logs `attack_eps_fraction`, the share of eps of the epoch's last batch.

    Args:
        warmup_epochs: Epochs (passes over the data) until the full eps; may
            be fractional. 0 disables the warm-up.

    Example:

    ```python
    trainer = PGDAT(classifier, eps=0.3, steps=10)
    trainer.fit(data, epochs=15, callbacks=[EpsilonWarmup(3)])
    ```
    """

    def __init__(self, warmup_epochs: float) -> None:
        super().__init__()
        if isinstance(warmup_epochs, bool) or not float(warmup_epochs) >= 0:
            raise ValueError(
                f"`warmup_epochs` must be >= 0. Received: warmup_epochs={warmup_epochs!r}"
            )
        self.warmup_epochs = float(warmup_epochs)
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._epoch = int(epoch)

    def on_train_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None:
        steps = (self.params or {}).get("steps")
        self.model.set_attack_budget(
            warmup_fraction(self._epoch, int(batch), steps, self.warmup_epochs)
        )

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if logs is not None:
            logs["attack_eps_fraction"] = self.model.attack_budget

    def get_config(self) -> dict:
        return {"warmup_epochs": self.warmup_epochs}

    @classmethod
    def from_config(cls, config: dict) -> "EpsilonWarmup":
        return cls(**config)
