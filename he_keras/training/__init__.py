"""Adversarial-training frameworks as `keras.Model.train_step` overrides.

`FRAMEWORKS` maps the `--framework` names of `apps/train.py` to trainer
classes; `CALLBACKS` maps `--callbacks` names to factories
`(config, trainer, data) -> keras.callbacks.Callback`.
"""

from he_keras.training.alp import ALP
from he_keras.training.base import AdversarialTrainer
from he_keras.training.callbacks import (
    CatastrophicOverfittingStop,
    fastat_early_stop_callback,
)
from he_keras.training.eps_warmup import EpsilonWarmup
from he_keras.training.fastat import FastAT
from he_keras.training.freeat import FreeAT
from he_keras.training.hat import HAT
from he_keras.training.multi_worker import DistributedTrainLoop
from he_keras.training.pgdat import PGDAT
from he_keras.training.schedules import (
    LinearScaleSchedule,
    MaxProbabilityScaleSchedule,
    he_cmp_callback,
    he_lis_callback,
)
from he_keras.training.standard import Standard
from he_keras.training.trades import TRADES

FRAMEWORKS = {
    "standard": Standard,
    "pgdat": PGDAT,
    "alp": ALP,
    "trades": TRADES,
    "fastat": FastAT,
    "freeat": FreeAT,
    "hat": HAT,
}

CALLBACKS: dict = {
    "he_lis": he_lis_callback,
    "he_cmp": he_cmp_callback,
    "fastat_early_stop": fastat_early_stop_callback,
}

__all__ = [
    "ALP",
    "AdversarialTrainer",
    "CALLBACKS",
    "CatastrophicOverfittingStop",
    "DistributedTrainLoop",
    "EpsilonWarmup",
    "FRAMEWORKS",
    "FastAT",
    "FreeAT",
    "HAT",
    "LinearScaleSchedule",
    "MaxProbabilityScaleSchedule",
    "PGDAT",
    "Standard",
    "TRADES",
]
