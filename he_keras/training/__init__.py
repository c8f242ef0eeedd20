"""Adversarial-training frameworks as `keras.Model.train_step` overrides.

`FRAMEWORKS` maps the `--framework` names of `apps/train.py` to trainer
classes; `CALLBACKS` maps `--callbacks` names to factories
`(config, trainer, data) -> keras.callbacks.Callback`.
"""

from he_keras.training.base import AdversarialTrainer
from he_keras.training.pgdat import PGDAT

FRAMEWORKS = {
    "pgdat": PGDAT,
}

CALLBACKS: dict = {}

__all__ = ["AdversarialTrainer", "CALLBACKS", "FRAMEWORKS", "PGDAT"]
