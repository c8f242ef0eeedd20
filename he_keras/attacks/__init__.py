"""Adversarial attacks in native TensorFlow."""

from he_keras.attacks.core import ProjectedGradientAttack, fgsm, project

__all__ = ["ProjectedGradientAttack", "fgsm", "project"]

# Evaluation attacks (issue 4).
from he_keras.attacks.adaptive import PGDRestarts, TemperaturePGD
from he_keras.attacks.apgd import APGD, APGDTargeted
from he_keras.attacks.base import Attack
from he_keras.attacks.blackbox import NES, ZOO
from he_keras.attacks.cleverhans_adapter import CleverHansAttack
from he_keras.attacks.cw import CarliniWagnerL2, CWLinf
from he_keras.attacks.deepfool import DeepFool
from he_keras.attacks.fab import FABTargeted
from he_keras.attacks.he_adaptive import HEAdaptivePGD
from he_keras.attacks.feature import FeatureAttack
from he_keras.attacks.rays import RayS, adbd
from he_keras.attacks.square import Square
from he_keras.attacks.transfer import TransferAttack

__all__ += [
    "APGD",
    "APGDTargeted",
    "Attack",
    "CWLinf",
    "CarliniWagnerL2",
    "CleverHansAttack",
    "DeepFool",
    "FABTargeted",
    "FeatureAttack",
    "HEAdaptivePGD",
    "NES",
    "PGDRestarts",
    "RayS",
    "Square",
    "TemperaturePGD",
    "TransferAttack",
    "ZOO",
    "adbd",
]
