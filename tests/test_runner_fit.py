"""One `fit` per run: epoch numbering, Keras callbacks across epochs (and a
resume), validation metrics, TensorBoard event files, the validation split."""

import contextlib
import dataclasses
import functools
import glob
import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from he_keras.runs import TrainConfig, run
from he_keras.data import from_arrays, split_validation
from he_keras.data.splits import stratified_mask

TINY = dict(
    n_train=160, batch_size=64, steps=1, step_size=0.3, n_eval=16, eval_steps=1,
    val_steps=2, seed=3,
)


class EpochRecorder(keras.callbacks.Callback):
    """Records the epochs and the number of `on_train_begin` calls."""

    def __init__(self):
        super().__init__()
        self.epochs, self.train_begins = [], 0

    def on_train_begin(self, logs=None):
        self.train_begins += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """A 3-epoch run with the progress bar and a recording callback."""
    out = str(tmp_path_factory.mktemp("run"))
    recorder = EpochRecorder()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        # No checkpoint before the last epoch (a fit of seconds under this interval).
        metrics = run(TrainConfig(epochs=3, output_dir=out, verbose=2, checkpoint_seconds=1e6, **TINY),
                      [recorder])
    return out, metrics, recorder, stdout.getvalue()


def test_one_fit_counts_the_epochs_of_the_run(three_epochs):
    out, metrics, recorder, stdout = three_epochs
    assert [line for line in stdout.splitlines() if line.startswith("Epoch ")] == [
        "Epoch 1/3", "Epoch 2/3", "Epoch 3/3"
    ]
    assert recorder.epochs == [0, 1, 2] and recorder.train_begins == 1
    # One checkpoint, of the finished run.
    (checkpoint,) = tf.train.CheckpointManager(
        tf.train.Checkpoint(), os.path.join(out, "checkpoints"), None
    ).checkpoints
    assert tf.train.load_checkpoint(checkpoint).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 3


def test_validation_metrics_every_epoch(three_epochs):
    _, metrics, _, stdout = three_epochs
    history = metrics["history"]
    for key in ("val_clean_accuracy", "val_adv_accuracy", "val_loss", "learning_rate", "he_scale"):
        assert len(history[key]) == 3, key
    # A 10 % stratified split of 160 examples; PGD can only lower accuracy.
    assert metrics["validation"]["n_examples"] == 16
    assert metrics["validation"]["attack"]["steps"] == 2
    assert all(a <= c for a, c in zip(history["val_adv_accuracy"], history["val_clean_accuracy"]))
    assert "val_adv_accuracy" in stdout and history["he_scale"] == [15.0] * 3


def test_metrics_say_where_the_fits_time_went(three_epochs):
    _, metrics, _, _ = three_epochs
    times = metrics["fit_times"]
    assert len(times["epoch_seconds"]) == 3 and min(times["epoch_seconds"]) > 0
    # The first compiled call (tracing included) ran inside the first epoch.
    assert 0 < times["first_call_seconds"] < times["epoch_seconds"][0]
    # Epochs and what ran between them make up the fit, inside `train_seconds`.
    assert times["outside_epochs_seconds"] > 0
    assert sum(times["epoch_seconds"]) + times["outside_epochs_seconds"] <= metrics["train_seconds"]


def _scalars(directory):
    values = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                values.setdefault(value.tag, {})[event.step] = number
    return values


def test_tensorboard_event_files(three_epochs):
    out, metrics, _, _ = three_epochs
    train = _scalars(os.path.join(out, "logs", "train"))
    validation = _scalars(os.path.join(out, "logs", "validation"))
    history = metrics["history"]
    for name in ("loss", "clean_accuracy", "adv_accuracy", "learning_rate", "he_scale"):
        assert train[f"epoch_{name}"] == pytest.approx(dict(enumerate(history[name]))), name
    assert validation["epoch_adv_accuracy"] == pytest.approx(
        dict(enumerate(history["val_adv_accuracy"]))
    )
    # TensorBoard itself (installed with the project) loads them as scalar curves.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for split, tag in (("train", "epoch_loss"), ("validation", "epoch_adv_accuracy")):
        events = EventAccumulator(os.path.join(out, "logs", split))
        events.Reload()
        assert tag in events.Tags()["tensors"], events.Tags()
        assert events.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
        assert [e.step for e in events.Tensors(tag)] == [0, 1, 2]


def test_notensorboard_and_no_validation(tmp_path):
    metrics = run(TrainConfig(
        epochs=1, output_dir=str(tmp_path), verbose=0, tensorboard=False,
        validation_split=0.0, **TINY,
    ))
    assert not os.path.exists(tmp_path / "logs")
    assert "val_adv_accuracy" not in metrics["history"]
    assert metrics["validation"] is None


def _never_improves(patience):
    return keras.callbacks.EarlyStopping("val_adv_accuracy", min_delta=10.0, patience=patience, mode="max")


def test_early_stopping_patience_spans_epochs_and_the_resume(tmp_path):
    """No epoch improves by 10: with patience 1 the run stops after its
    second epoch (per-epoch fits reset the patience and never stop), and
    running the command again does not train on."""
    config = TrainConfig(epochs=5, output_dir=str(tmp_path), verbose=0, **TINY)
    first = run(config, [_never_improves(1)])
    assert len(first["history"]["loss"]) == 2
    recorder = EpochRecorder()
    again = run(config, [_never_improves(1), recorder])
    assert recorder.epochs == [] and again["history"] == first["history"]


def test_early_stopping_counts_on_after_a_resume(tmp_path):
    """Patience 2 stops after epoch 3 (the first sets `best`); a run resumed
    after 2 epochs has waited one epoch already, so it also stops after epoch
    3, not after 5 as a reset counter would."""
    config = TrainConfig(epochs=2, output_dir=str(tmp_path), verbose=0, **TINY)
    assert len(run(config, [_never_improves(2)])["history"]["loss"]) == 2
    recorder = EpochRecorder()
    resumed = run(dataclasses.replace(config, epochs=6), [_never_improves(2), recorder])
    assert recorder.epochs == [2] and len(resumed["history"]["loss"]) == 3
    assert resumed["callback_counters"][-1]["1:EarlyStopping"]["wait"] == 2


def test_stratified_mask_is_seeded_and_proportional():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    mask = stratified_mask(labels, 0.1, seed=0)
    assert mask.sum() == 10
    assert [int(mask[labels == c].sum()) for c in range(4)] == [4, 3, 2, 1]
    np.testing.assert_array_equal(mask, stratified_mask(labels, 0.1, seed=0))
    assert not np.array_equal(mask, stratified_mask(labels, 0.1, seed=1))


def test_split_validation_partitions_the_training_data():
    ids = np.arange(50, dtype=np.float32)[:, None]
    labels = (np.arange(50) % 5).astype(np.int32)
    data = from_arrays("ids", ids, labels, ids[:5], labels[:5], 5)
    splits = split_validation(data, 0.2, seed=4)
    train_ids = [float(x[0]) for x, _ in splits.train.as_numpy_iterator()]
    val_ids = [float(x[0]) for x, _ in splits.validation.as_numpy_iterator()]
    assert (splits.n_train, splits.n_validation) == (40, 10) == (len(train_ids), len(val_ids))
    assert sorted(train_ids + val_ids) == list(ids[:, 0])
    assert train_ids == sorted(train_ids)  # each part keeps the original order
    assert sorted(int(i) % 5 for i in val_ids) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    none = split_validation(data, 0.0, seed=4)
    assert (none.validation, none.n_train, none.n_validation) == (None, 50, 0)
    first = split_validation(data, 0.2, seed=4, limit=20)  # the first 20 examples only
    assert (first.n_train, first.n_validation) == (16, 4)
    assert max(float(x[0]) for x, _ in first.train.concatenate(first.validation).as_numpy_iterator()) == 19
    small = from_arrays("ids", ids[:3], labels[:3], ids[:3], labels[:3], 5)
    with pytest.raises(ValueError, match="leaves 0 for validation"):
        split_validation(small, 0.1, seed=0)


@pytest.mark.parametrize("field, value, message", [
    ("validation_split", 1.0, "validation_split=1.0"),
    ("validation_split", -0.1, "validation_split=-0.1"),
    ("val_steps", 0, "val_steps=0"),
])
def test_bad_validation_settings_name_the_value(field, value, message, tmp_path):
    config = TrainConfig(output_dir=str(tmp_path), **{field: value})
    with pytest.raises(ValueError, match=message):
        config.validate()


class HookRecorder(keras.callbacks.Callback):
    """Records the epoch-level hooks Keras calls, in order."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_test_begin(self, logs=None):
        self.calls.append("test_begin")

    def on_test_end(self, logs=None):
        self.calls.append("test_end")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch} " + ",".join(sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_distributed_loop_calls_the_hooks_fit_calls():
    """The multi-worker loop (here on two mirrored CPUs) and `fit` give the
    callbacks the same epoch-level hooks, epochs and logs keys."""
    from he_keras.models import build_model
    from he_keras.training import PGDAT, DistributedTrainLoop
    from he_keras.runs.build import make_strategy
    from helpers import digits_arrays

    x, y, _, _ = digits_arrays()
    train = tf.data.Dataset.from_tensor_slices((x[:128], y[:128])).batch(32, drop_remainder=True)
    val = tf.data.Dataset.from_tensor_slices((x[128:160], y[128:160])).batch(32, drop_remainder=True)
    strategy = make_strategy("mirrored")
    calls = []
    for use_loop in (False, True):
        with strategy.scope():
            trainer = PGDAT(build_model("small_cnn", (8, 8, 1), 10), eps=0.3, step_size=0.3, steps=1)
            trainer.compile(optimizer="adam")
            trainer.optimizer.build(trainer.trainable_variables)  # slots outside the step
        recorder = HookRecorder()
        fit = DistributedTrainLoop(trainer, strategy).fit if use_loop else functools.partial(trainer.fit, shuffle=False)
        fit(train.repeat(), epochs=3, initial_epoch=1, steps_per_epoch=2, callbacks=[recorder],
            validation_data=val, verbose=0)
        calls.append(recorder.calls)
    assert calls[0] == calls[1]
    assert calls[0][:3] == ["train_begin", "epoch_begin 1", "test_begin"]
    assert "val_adv_accuracy" in calls[0][4] and calls[0][-1] == "train_end"


def test_validation_loss_ignores_the_empty_step_of_an_unsized_dataset():
    """Keras evaluates one empty step past the end of a dataset of unknown
    size; it must not enter the loss mean as a batch of loss 0 (it did:
    3 batches reported 3/4 of their mean loss)."""
    from he_keras.models import build_model
    from he_keras.training import PGDAT
    from helpers import digits_arrays

    x, y, _, _ = digits_arrays()
    sized = tf.data.Dataset.from_tensor_slices((x[:144], y[:144]))
    results = []
    for data in (sized, sized.filter(lambda image, label: True)):
        keras.utils.set_random_seed(0)
        trainer = PGDAT(build_model("small_cnn", (8, 8, 1), 10), eps=0.3, step_size=0.1, steps=2, seed=0)
        trainer.compile(optimizer="adam")
        results.append(trainer.evaluate(data.batch(64), verbose=0, return_dict=True))
    assert results[1]["loss"] == pytest.approx(results[0]["loss"], rel=1e-6)
    assert results[1] == pytest.approx(results[0], rel=1e-6)


class FirstWeights(keras.callbacks.Callback):
    """Records the classifier's weights when training begins."""

    def on_train_begin(self, logs=None):
        self.weights = [w.copy() for w in self.model.classifier.get_weights()]


def test_init_model_starts_the_run_from_its_weights_and_a_resume_ignores_it(three_epochs, tmp_path):
    """Adversarial fine-tuning (HAT Sec. 3): the run starts from another
    model's weights, not from a fresh initialization; a resumed run starts
    from its own checkpoint."""
    from he_keras.models.io import load_model

    source = os.path.join(three_epochs[0], "model.keras")
    expected = load_model(source).get_weights()
    recorder = FirstWeights()
    out = str(tmp_path / "finetune")
    config = TrainConfig(epochs=1, output_dir=out, verbose=0, init_model=source, **TINY)
    run(config, [recorder])
    assert all(np.array_equal(a, b) for a, b in zip(recorder.weights, expected))
    fresh = FirstWeights()
    run(TrainConfig(epochs=1, output_dir=str(tmp_path / "fresh"), verbose=0, **TINY), [fresh])
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.weights, expected))
    # Resuming (one more epoch) starts from the fine-tuned epoch-1 checkpoint.
    after_one = load_model(os.path.join(out, "model.keras")).get_weights()
    resumed = FirstWeights()
    run(dataclasses.replace(config, epochs=2), [resumed])
    assert all(np.array_equal(a, b) for a, b in zip(resumed.weights, after_one))
    assert not all(np.array_equal(a, b) for a, b in zip(resumed.weights, expected))
    # A model of another architecture is refused before anything is written.
    with pytest.raises(ValueError, match="does not fit the configured model"):
        run(TrainConfig(epochs=1, output_dir=str(tmp_path / "linear"), head="linear", verbose=0,
                        init_model=source, **TINY))
    assert not (tmp_path / "linear").exists()


def test_distributed_loop_trains_a_plain_keras_model():
    """The loop is not tied to `AdversarialTrainer`: a compiled Keras model
    without an attack budget trains through it too."""
    from he_keras.training import DistributedTrainLoop
    from he_keras.runs.build import make_strategy

    strategy = make_strategy("mirrored")
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (rng.random((32, 4), np.float32), rng.integers(0, 3, 32))).batch(8, drop_remainder=True)
    history = DistributedTrainLoop(model, strategy).fit(data, epochs=2)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


def test_the_training_stream_has_no_autotune_thread_and_the_same_batches():
    """tf.data's autotune model thread held the stream iterator's destructor
    16-39 s when `fit` returned; without it the batches are the same."""
    from he_keras.data import batches
    from he_keras.runs.build import epoch_stream

    rng = np.random.default_rng(0)
    data = from_arrays("toy", rng.uniform(size=(40, 4, 4, 1)).astype("float32"), np.arange(40) % 4,
                       rng.uniform(size=(8, 4, 4, 1)).astype("float32"), np.arange(8) % 4, 4)

    def epoch(e):
        return batches(data.train, 16, shuffle=True, seed=e, steps=3)

    stream = epoch_stream(epoch, 0, 3)
    assert stream.options().autotune.enabled is False
    autotuned = epoch(0).concatenate(epoch(1)).concatenate(epoch(2))
    got = [y.numpy().tolist() for _, y in stream]
    assert got == [y.numpy().tolist() for _, y in autotuned]
    assert len(got) == 9 and got[0] != got[3]  # Each epoch reshuffled.
