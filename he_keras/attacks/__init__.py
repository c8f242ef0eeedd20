"""Adversarial attacks in native TensorFlow."""

from he_keras.attacks.core import ProjectedGradientAttack, fgsm, project

__all__ = ["ProjectedGradientAttack", "fgsm", "project"]
