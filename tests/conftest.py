"""Test set-up: quiet TF logs, two logical CPU devices, parsed absl flags, the
undefended models shared by the pytest processes of a run."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

# Two logical CPU devices so MirroredStrategy tests run on one CPU; this must
# happen before TensorFlow initializes its devices.
_cpus = tf.config.list_physical_devices("CPU")
if len(tf.config.get_logical_device_configuration(_cpus[0]) or []) < 2:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )


def pytest_configure(config):
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session", autouse=True)
def shared_model_cache(tmp_path_factory):
    """Points `helpers.SHARED_CACHE` at a folder every process of this run
    shares: the basetemp's parent for an xdist worker (the run's root), the
    basetemp itself without xdist."""
    import helpers

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    helpers.SHARED_CACHE = str(root / "shared-models")


# Longest files first. `make test` runs `pytest -n 2 --dist loadfile
# --no-loadscope-reorder`: each file goes whole to one worker in this order, so
# the long end-to-end files start at once instead of last (xdist's own order,
# most tests first, left the quick study running alone on one core for the
# last minutes). Seconds per file on 2 Xeon cores (junit XML of `make test`'s
# pytest, commit c7e643d, a niced benchmark running beside it); files under
# 5 s are not listed and follow in their usual order.
FILE_SECONDS = {
    "test_experiments_quick.py": 177,
    "test_frameworks.py": 125,
    "test_fault_tolerance.py": 96,
    "test_attacks_core.py": 77,
    "test_streaming.py": 56,
    "test_attacks_eval.py": 53,
    "test_distribution.py": 48,
    "test_pgdat.py": 47,
    "test_runner_fit.py": 32,
    "test_evaluation_fidelity.py": 29,
    "test_backends.py": 23,
    "test_imagenet_data.py": 23,
    "test_export.py": 23,
    "test_eps_warmup.py": 23,
    "test_evaluation_suite.py": 23,
    "test_study_claims.py": 20,
    "test_attacks_blackbox.py": 19,
    "test_evaluate_app.py": 16,
    "test_orchestration.py": 16,
    "test_catastrophic_overfitting.py": 14,
    "test_attack_fidelity.py": 12,
    "test_study_stats.py": 9,
    "test_freeat.py": 8,
    "test_bad_input.py": 6,
    "test_corruptions.py": 6,
}


def pytest_collection_modifyitems(session, config, items):
    """Orders the files longest first (a stable sort: tests keep their order)."""
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))
