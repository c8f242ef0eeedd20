"""Honest robustness evaluation: attack suites with per-point worst-case
bookkeeping, class-wise analysis, gradient-masking checks, margins along
adversarial directions, common corruptions, and reports."""

from he_keras.evaluation.corruption_ops import (
    BENCHMARK_CORRUPTIONS,
    HELD_OUT_CORRUPTIONS,
    corrupt,
)
from he_keras.evaluation.corruptions import (
    corruption_accuracy,
    corruption_benchmark,
    corruption_benchmark_chunks,
)
from he_keras.evaluation.ensemble import (
    AttackResult,
    EnsembleResult,
    SuiteAttack,
    merge_results,
    run_ensemble,
)
from he_keras.evaluation.corruption_report import write_corruption_report
from he_keras.evaluation.pgd_eval import pgd_accuracy
from he_keras.evaluation.presets import SUITES, preset_attacks
from he_keras.evaluation.report import write_report
from he_keras.evaluation.suite import evaluate, evaluate_chunks

__all__ = [
    "AttackResult",
    "BENCHMARK_CORRUPTIONS",
    "EnsembleResult",
    "HELD_OUT_CORRUPTIONS",
    "SUITES",
    "SuiteAttack",
    "corrupt",
    "corruption_accuracy",
    "corruption_benchmark",
    "corruption_benchmark_chunks",
    "evaluate",
    "evaluate_chunks",
    "merge_results",
    "pgd_accuracy",
    "preset_attacks",
    "run_ensemble",
    "write_corruption_report",
    "write_report",
]
