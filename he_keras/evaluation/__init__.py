"""Honest robustness evaluation: attack suites with per-point worst-case
bookkeeping, class-wise analysis, gradient-masking checks, margins along
adversarial directions, common corruptions, and reports."""

from he_keras.evaluation.ensemble import (
    AttackResult,
    EnsembleResult,
    SuiteAttack,
    run_ensemble,
)
from he_keras.evaluation.report import write_report
from he_keras.evaluation.suite import SUITES, evaluate, preset_attacks

__all__ = [
    "AttackResult",
    "EnsembleResult",
    "SUITES",
    "SuiteAttack",
    "evaluate",
    "preset_attacks",
    "run_ensemble",
    "write_report",
]
