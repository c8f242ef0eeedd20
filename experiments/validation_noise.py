"""How noisy the per-epoch validation number is, and a validation that is not.

The trainer's validation attack (`test_step`) draws a new random start every
epoch, so `val_adv_accuracy` moves even when the model does not.
`validation_attack_noise` measures that spread on a fixed model;
`fixed_seed_validation` logs the same attack from the same seed every epoch
(common random numbers), so its curve moves with the model only. The
calibration (`experiments.calibrate`) judges a regime's plateau on it.
"""

from __future__ import annotations

import keras
import numpy as np

from he_keras.attacks.core import ProjectedGradientAttack
from he_keras.data import load_dataset, split_validation, to_numpy
from he_keras.defaults import pgd_step_size
from he_keras.models.io import load_model

# Attack seeds of the validation-noise measurement.
VAL_NOISE_SEEDS = 10
# Seed of the fixed-seed validation attack (100 + the attack seeds above).
FIXED_VAL_SEED = 100


def validation_arrays(config: dict) -> tuple[np.ndarray, np.ndarray]:
    """The runner's seeded validation split of a run's settings, as arrays."""
    splits = split_validation(
        load_dataset(config["dataset"]), config["validation_split"], config["seed"], config.get("n_train", 0)
    )
    return to_numpy(splits.validation)


def validation_pgd(config: dict, seed: int):
    """The trainer's validation attack (PGD, CE, `val_steps` steps of
    2.5 eps / steps, uniform random start, last iterate) with `seed`."""
    steps = config.get("val_steps", 10)
    return ProjectedGradientAttack(
        eps=config["eps"], step_size=pgd_step_size(config["eps"], steps), steps=steps,
        norm=config.get("norm", "linf"), random_start="uniform", objective="ce", seed=seed)


def attacked_accuracy(model, pgd, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Accuracy of `model` on `pgd`'s adversarial examples of `(x, y)`.

    What the trainer's `test_step` measures (every point attacked, the last
    iterate predicted), not `he_keras.evaluation.pgd_accuracy` (clean-correct
    points, best iterate): the calibration compares it with the logged
    `val_adv_accuracy`.
    """
    correct = 0
    for i in range(0, len(x), batch_size):
        x_adv = pgd(model, x[i:i + batch_size], y[i:i + batch_size])
        pred = np.asarray(model(x_adv, training=False)).argmax(1)
        correct += int(np.sum(pred == y[i:i + batch_size]))
    return correct / len(x)


def fixed_seed_validation(config: dict, seed: int = FIXED_VAL_SEED):
    """A Keras callback logging `val_adv_fixed_accuracy` after every epoch.

    The validation attack restarts from the same seed every epoch (common
    random numbers), so a model that stopped changing gives the same number
    and the plateau criterion measures the model, not the attack's random
    start (see `validation_attack_noise`).
    """
    x, y = validation_arrays(config)
    pgd = validation_pgd(config, seed)

    class FixedSeedValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            pgd.rng.reset_from_seed(seed)
            if logs is not None:
                logs["val_adv_fixed_accuracy"] = attacked_accuracy(self.model.classifier, pgd, x, y)

    return FixedSeedValidation()


def validation_attack_noise(metrics: dict, seeds: int = VAL_NOISE_SEEDS) -> dict:
    """Spread of the per-epoch validation number for one fixed model.

    Re-runs the trainer's validation attack on the final model and the same
    seeded validation split with `seeds` different attack seeds. Its spread
    is the part of an epoch-to-epoch change of `val_adv_accuracy` that comes
    from the attack's random start alone.

    Returns:
        `{"n", "seeds", "accuracies", "mean", "std", "span"}`.
    """


    config = metrics["config"]
    x, y = validation_arrays(config)
    model = load_model(metrics["model_path"])
    accuracies = [attacked_accuracy(model, validation_pgd(config, seed), x, y)
                  for seed in range(seeds)]
    return {"n": len(x), "seeds": seeds, "accuracies": accuracies, "mean": float(np.mean(accuracies)),
            "std": float(np.std(accuracies, ddof=1)), "span": max(accuracies) - min(accuracies)}
