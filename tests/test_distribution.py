"""Every framework under MirroredStrategy (2 logical CPUs) matches one device;
multi-worker training through `apps/train.py --strategy=multi_worker`."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from he_keras.attacks import core as attack_core
from he_keras.models import build_model
from he_keras.training import FRAMEWORKS, DistributedTrainLoop
from he_keras.runs.build import make_strategy
from helpers import digits_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The same start on one and two devices (`_fixed_start` replaces the random
# draw, whose stream differs per replica by design).
PARAMS = {
    "standard": {},
    "pgdat": {"random_start": "zero"},
    "alp": {"random_start": "zero", "beta": 0.5},
    "trades": {"random_start": "zero", "beta": 6.0},
    "fastat": {"random_start": "zero", "steps": 1, "step_size": 0.375},
    "freeat": {"replays": 2, "steps": 1, "step_size": 0.3},
    "hat": {"random_start": "zero", "beta": 2.5, "gamma": 0.5},
}
HEADS = {"alp": "mhe", "fastat": "linear", "hat": "mhe"}


def _two_cpus():
    # The run's cached strategy: a second MirroredStrategy on the same devices
    # in one process would collide with its collective keys.
    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2, "conftest.py splits the CPU in two"
    return strategy


def _fixed_start(rng, x, eps, norm, kind):
    """A deterministic, non-zero start: a fixed pattern of half the radius.

    A zero start would put TRADES' and HAT's KL objective at its minimum,
    where the input gradient is zero in exact arithmetic and its round-off
    (which changes with the kernels and the batch split) picks the path.
    """
    size = int(np.prod(x.shape[1:]))
    pattern = tf.reshape(tf.sin(1.7 * tf.range(size, dtype=tf.float32)), [1, *x.shape[1:]])
    return tf.clip_by_value(x + 0.5 * eps * pattern, 0.0, 1.0)


def _one_step(name, strategy, weights, helper_weights, x, y):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        clf = build_model("small_cnn", (8, 8, 1), 10, head=HEADS.get(name, "he"), s=15.0)
        clf.set_weights(weights)
        params = {"eps": 0.3, "step_size": 0.1, "steps": 2, "seed": 0, **PARAMS[name]}
        if name == "hat":
            helper = build_model("small_cnn", (8, 8, 1), 10, head="linear")
            helper.set_weights(helper_weights)
            params["helper_model"] = helper
        trainer = FRAMEWORKS[name](clf, **params)
        trainer.compile(optimizer=keras.optimizers.SGD(0.5))
    logs = trainer.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return clf.get_weights(), {k: v[-1] for k, v in logs.history.items()}


def _relative_update_error(expected, actual, initial) -> float:
    """||actual update - expected update|| / ||expected update||.

    A replica sum off by a factor (the usual bug) is off by 50-100 % of the
    update; round-off, by about 1e-7 (measured).
    """
    want = np.concatenate([(a - w).ravel() for a, w in zip(expected, initial)])
    got = np.concatenate([(b - w).ravel() for b, w in zip(actual, initial)])
    assert np.abs(want).max() > 1e-3  # the step really changed the weights
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_one_mirrored_step_matches_one_device(name, monkeypatch):
    monkeypatch.setattr(attack_core, "random_start", _fixed_start)
    x, y, _, _ = digits_arrays()
    x, y = x[:32], y[:32]
    keras.utils.set_random_seed(1)
    weights = build_model("small_cnn", (8, 8, 1), 10, head=HEADS.get(name, "he")).get_weights()
    helper_weights = build_model("small_cnn", (8, 8, 1), 10, head="linear").get_weights()
    single, single_logs = _one_step(name, tf.distribute.get_strategy(), weights, helper_weights, x, y)
    mirrored, mirrored_logs = _one_step(name, _two_cpus(), weights, helper_weights, x, y)
    assert _relative_update_error(single, mirrored, weights) < 1e-2
    # The logged loss is the global mean, not 1/replicas of it.
    assert mirrored_logs["loss"] == pytest.approx(single_logs["loss"], rel=1e-4)


def test_attack_random_streams_differ_per_replica():
    strategy = _two_cpus()
    with strategy.scope():
        trainer = FRAMEWORKS["pgdat"](
            build_model("small_cnn", (8, 8, 1), 10, head="he"), eps=0.3, step_size=0.1, seed=0
        )
    draws = strategy.run(tf.function(lambda: trainer.attack.rng.uniform([64])))
    first, second = strategy.experimental_local_results(draws)
    assert not np.allclose(first.numpy(), second.numpy())


def test_distributed_loop_matches_fit_on_mirrored_strategy(monkeypatch):
    monkeypatch.setattr(attack_core, "random_start", _fixed_start)
    x, y, _, _ = digits_arrays()
    keras.utils.set_random_seed(2)
    weights = build_model("small_cnn", (8, 8, 1), 10, head="he").get_weights()
    results = []
    for use_loop in (False, True):
        strategy = _two_cpus()
        with strategy.scope():
            clf = build_model("small_cnn", (8, 8, 1), 10, head="he")
            clf.set_weights(weights)
            trainer = FRAMEWORKS["trades"](clf, eps=0.3, step_size=0.1, steps=2, random_start="zero")
            trainer.compile(optimizer=keras.optimizers.SGD(0.5))
        data = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(32, drop_remainder=True)
        if use_loop:
            history = DistributedTrainLoop(trainer, strategy).fit(data, epochs=1)
        else:
            history = trainer.fit(data, epochs=1, shuffle=False, verbose=0)
        results.append((clf.get_weights(), history.history))
    (fit_weights, fit_logs), (loop_weights, loop_logs) = results
    assert _relative_update_error(fit_weights, loop_weights, weights) < 1e-2
    assert set(loop_logs) == set(fit_logs)
    for key in fit_logs:
        assert loop_logs[key][0] == pytest.approx(fit_logs[key][0], rel=1e-4), key


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_trades_he_to_identical_weights(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    out = tmp_path / "run"
    command = [
        sys.executable, os.path.join(ROOT, "apps", "train.py"),
        f"--flagfile={os.path.join(ROOT, 'configs', 'digits_trades_he.cfg')}",
        "--strategy=multi_worker", "--epochs=2", "--n_train=192", "--batch_size=64",
        "--n_eval=64", "--eval_steps=5", f"--output_dir={out}", "--verbose=1",
        "--eps_warmup_epochs=1",  # the budget variable under MultiWorkerMirroredStrategy
    ]
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ))
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=240)[0])
        finally:
            worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
        assert output.count("Epoch ") == 2 and "clean accuracy" in output, output[-3000:]
    chief = keras.models.load_model(str(out / "model.keras"))
    other = keras.models.load_model(str(out / "worker_1" / "model.keras"))
    for a, b in zip(chief.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    for directory in (out, out / "worker_1"):
        with open(directory / "metrics.json") as f:
            metrics = json.load(f)
        assert metrics["config"]["strategy"] == "multi_worker"
        assert len(metrics["history"]["loss"]) == 2
        assert metrics["history"]["attack_eps_fraction"] == [0.5, 1.0]
        assert all(np.isfinite(metrics["history"]["loss"]))
        # A checkpoint after every epoch whatever --checkpoint_seconds (30 by default) says.
        checkpoints = tf.train.get_checkpoint_state(str(directory / "checkpoints")).all_model_checkpoint_paths
        assert [os.path.basename(path) for path in checkpoints] == ["ckpt-1", "ckpt-2"]
