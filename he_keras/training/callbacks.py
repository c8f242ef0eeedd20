"""Training callbacks: FastAT's catastrophic-overfitting early stop."""

from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np

from he_keras.attacks.core import ProjectedGradientAttack


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
        self.step_size = float(eps / 4 if step_size is None else step_size)
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
    """`--callbacks=fastat_early_stop`: PGD-5 on the first training batch."""
    from he_keras.data import to_numpy

    x, y = to_numpy(data.train, config.batch_size)
    return CatastrophicOverfittingStop(x, y, eps=config.eps, seed=config.seed)
