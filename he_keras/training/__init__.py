"""Adversarial-training frameworks as `keras.Model.train_step` overrides."""

from he_keras.training.base import AdversarialTrainer
from he_keras.training.pgdat import PGDAT

FRAMEWORKS = {
    "pgdat": PGDAT,
}

__all__ = ["AdversarialTrainer", "FRAMEWORKS", "PGDAT"]
