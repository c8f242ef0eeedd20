"""ImageNet-style data: crops, the imagenet2012 / imagenette loaders (tfds mock
data, offline) and the shipped ImageNet config, trained for one step."""

import json
import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import forkrun
from he_keras.data import EMBEDDED, batches, load_dataset, to_numpy
from he_keras.data.crops import random_resized_crop, resize_center_crop
from he_keras.data.tfds_datasets import IMAGENET_MEAN, IMAGENET_STD, TFDS_DATASETS, check_manual_data_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def _grid(height, width):
    """A float image whose pixels encode their own (row, column)."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows / height, cols / width, np.zeros_like(rows)], -1).astype("float32")


def _archives(directory):
    os.makedirs(directory, exist_ok=True)
    for name in ARCHIVES:
        open(os.path.join(directory, name), "wb").close()
    return str(directory)


def test_random_resized_crop_takes_a_window_of_the_drawn_size_anywhere():
    image = _grid(40, 40)
    offsets = set()
    for index in range(40):
        # Area 1/4 and ratio 1: a 20x20 window, resized to 20x20 (identity).
        crop = random_resized_crop(image, [7, index], size=20, scale=(0.25, 0.25), ratio=(1.0, 1.0))
        top, left = int(round(crop[0, 0, 0].numpy() * 40)), int(round(crop[0, 0, 1].numpy() * 40))
        np.testing.assert_allclose(crop.numpy(), image[top : top + 20, left : left + 20], atol=1e-6)
        offsets.add((top, left))
    assert min(t for t, _ in offsets) <= 3 and max(t for t, _ in offsets) >= 17  # spans [0, 20]
    assert len(offsets) > 20
    a = random_resized_crop(image, [3, 4])
    np.testing.assert_array_equal(a.numpy(), random_resized_crop(image, [3, 4]).numpy())
    assert not np.array_equal(a.numpy(), random_resized_crop(image, [3, 5]).numpy())


def test_random_resized_crop_areas_and_ratios_stay_in_range():
    # A 1x1 crop resized to 224 is constant; the crop's extent in the source is
    # read back from the first and last output pixels of the encoding grid.
    image = _grid(200, 300)
    areas, ratios = [], []
    for index in range(60):
        crop = random_resized_crop(image, [1, index], size=224).numpy()
        rows = crop[[0, -1], 0, 0] * 200
        cols = crop[0, [0, -1], 1] * 300
        h, w = rows[1] - rows[0] + 1, cols[1] - cols[0] + 1
        areas.append(h * w / (200 * 300))
        ratios.append(w / h)
    assert 0.08 - 0.02 <= min(areas) and max(areas) <= 1.0 + 0.02
    assert min(areas) < 0.3 and max(areas) > 0.6  # the whole range is drawn
    assert 0.75 - 0.05 <= min(ratios) and max(ratios) <= 4 / 3 + 0.05
    assert min(ratios) < 0.85 and max(ratios) > 1.2


def test_resized_crop_flip_augmentation_flips_about_half_and_is_seeded():
    image = _grid(60, 80)
    ds = tf.data.Dataset.from_tensor_slices((np.stack([image] * 32), np.zeros(32, "int32")))
    x = next(iter(batches(ds, 32, augment="resized_crop_flip", seed=2)))[0].numpy()
    assert x.shape == (32, 224, 224, 3)
    flipped = x[:, 0, 0, 1] > x[:, 0, -1, 1]  # columns decrease left to right
    assert 6 <= flipped.sum() <= 26
    again = next(iter(batches(ds, 32, augment="resized_crop_flip", seed=2)))[0].numpy()
    np.testing.assert_array_equal(x, again)


def test_random_resized_crop_falls_back_to_the_central_crop():
    # No candidate fits (area > image): the centered square of a 10x40 image.
    image = _grid(10, 40)
    crop = random_resized_crop(image, [0, 0], size=10, scale=(2.0, 3.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(crop.numpy(), image[:, 15:25], atol=1e-6)


def test_resize_center_crop_resizes_the_shorter_side_then_takes_the_center():
    image = _grid(256, 300)  # shorter side already 256: no resampling
    crop = resize_center_crop(image).numpy()
    np.testing.assert_allclose(crop, image[16:240, 38:262], atol=1e-6)
    tall = resize_center_crop(tf.random.uniform((500, 60, 3), seed=1))
    assert tall.shape == (224, 224, 3) and 0.0 <= float(tf.reduce_min(tall)) <= float(tf.reduce_max(tall)) <= 1.0


@pytest.mark.parametrize("name", ["imagenet2012", "imagenette", "imagenette/full-size-v2", "imagenette/160px-v2"])
def test_imagenet_style_loaders_offline(name, tmp_path):
    data_dir = _archives(tmp_path / "manual") if name == "imagenet2012" else None
    loads = []
    real_load = tfds.load

    def spy(*args, **kwargs):
        loads.append(args[0])
        return real_load(*args, **kwargs)

    # Mock images have random sizes between 5 and 49 pixels.
    with tfds.testing.mock_data(num_examples=5), mock.patch.object(tfds, "load", spy):
        data = load_dataset(name, data_dir=data_dir)
        x_test, y_test = to_numpy(data.test)
        train = batches(data.train, 5, shuffle=True, augment=data.augment, seed=3)
        x_train, y_train = next(iter(train))
        again = next(iter(batches(data.train, 5, shuffle=True, augment=data.augment, seed=3)))[0]
        other = next(iter(batches(data.train, 5, shuffle=True, augment=data.augment, seed=4)))[0]
    assert loads == [{"imagenette": "imagenette/320px-v2"}.get(name, name)]
    classes = 1000 if name == "imagenet2012" else 10
    assert (data.num_classes, data.input_shape) == (classes, (224, 224, 3))
    assert data.mean == IMAGENET_MEAN and data.std == IMAGENET_STD
    assert data.augment == "resized_crop_flip"
    for x in (x_test, x_train.numpy()):
        assert x.shape == (5, 224, 224, 3) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    assert y_test.max() < classes and y_train.dtype == tf.int32
    np.testing.assert_array_equal(x_train.numpy(), again.numpy())
    assert not np.array_equal(x_train.numpy(), other.numpy())
    with pytest.raises(ValueError, match="augment"):  # encoded images of any size
        to_numpy(data.train)


def test_imagenet2012_data_dir_must_hold_archives_or_the_prepared_dataset(tmp_path):
    with pytest.raises(ValueError, match="--data_dir=DIR"):
        check_manual_data_dir("imagenet2012", None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="neither the prepared 'imagenet2012'.*ILSVRC2012_img_val.tar"):
        check_manual_data_dir("imagenet2012", str(empty))
    open(empty / ARCHIVES[0], "wb").close()  # one archive of two
    with pytest.raises(ValueError, match=str(empty)):
        check_manual_data_dir("imagenet2012", str(empty))
    assert check_manual_data_dir("imagenet2012", _archives(tmp_path / "top")) == str(tmp_path / "top")
    manual = _archives(tmp_path / "tfds" / "downloads" / "manual")
    assert check_manual_data_dir("imagenet2012", str(tmp_path / "tfds")) == manual
    prepared = tmp_path / "prepared" / "imagenet2012" / "5.1.0"
    prepared.mkdir(parents=True)
    (prepared / "dataset_info.json").write_text("{}")
    assert check_manual_data_dir("imagenet2012", str(tmp_path / "prepared")) is None
    assert TFDS_DATASETS["imagenet2012"].manual_files == ARCHIVES


def test_every_shipped_config_names_a_loadable_dataset():
    configs = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".cfg"))
    for name in configs:
        with open(os.path.join(ROOT, "configs", name)) as lines:
            datasets = [line.strip().split("=", 1)[1] for line in lines if line.startswith("--dataset=")]
        assert len(datasets) == 1 and (datasets[0] in EMBEDDED or datasets[0] in TFDS_DATASETS), name
    assert "imagenet_freeat_he.cfg" in configs


# Parses configs/imagenet_freeat_he.cfg with apps/train.py's flags and, on tfds
# mock data (200 examples per split): builds the config's own trainer
# (ResNet-50, HE head, FreeAT), then trains two steps with a tiny backbone in
# its place (ResNet-50 at 224x224 takes minutes per step on a CPU), with the
# config's own validation split (1 %: 2 held-out images) and its PGD-10
# validation pass.
_RUN_CONFIG = r"""
import importlib.util, json, os, sys
root, data_dir, out = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("train_app", os.path.join(root, "apps", "train.py"))
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
from absl import flags
import tensorflow_datasets as tfds
from he_keras.data import load_dataset
from he_keras.runs import build, run

def config(*overrides):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", "--flagfile=" + os.path.join(root, "configs", "imagenet_freeat_he.cfg"),
                 "--data_dir=" + data_dir, "--output_dir=" + out, "--verbose=0", *overrides])
    return app.config_from_flags()

with tfds.testing.mock_data(num_examples=200):
    full = config()
    trainer = build.build_trainer(full, load_dataset(full.dataset, full.data_dir))
    built = {"model": full.model, "framework": type(trainer).__name__, "replays": trainer.replays,
             "input": list(trainer.classifier.input_shape), "output": list(trainer.classifier.output_shape)}
    metrics = run(config("--model=wide_resnet", "--depth=10", "--width=1", "--batch_size=2",
                         "--steps_per_epoch=2", "--epochs=1", "--n_eval=2", "--eval_steps=1"))
print(json.dumps({"built": built, "metrics": metrics}, default=str))
"""


def _python(*args):
    """A Python process in ROOT (forked from the `forkrun` server: TensorFlow imported)."""
    return forkrun.run(args, timeout=600, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_imagenet_freeat_he_config_trains_one_step_on_mock_data(tmp_path):
    data_dir = _archives(tmp_path / "imagenet")
    done = _python("-c", _RUN_CONFIG, ROOT, data_dir, str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["built"] == {"model": "resnet50", "framework": "FreeAT", "replays": 4,
                               "input": [None, 224, 224, 3], "output": [None, 1000]}
    metrics = result["metrics"]
    assert metrics["config"]["dataset"] == "imagenet2012" and metrics["config"]["head"] == "he"
    assert metrics["config"]["validation_split"] == 0.01 and metrics["steps_per_epoch"] == 2
    history = metrics["history"]
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    assert metrics["validation"]["n_held_out"] == 2 and metrics["validation"]["n_examples"] == 2
    assert metrics["validation"]["attack"]["steps"] == 10
    assert 0.0 <= history["val_adv_accuracy"][0] <= history["val_clean_accuracy"][0] <= 1.0
    assert metrics["test"]["n_examples"] == 2
    assert os.path.isfile(tmp_path / "run" / "model.keras")


def test_train_app_refuses_an_imagenet_data_dir_without_the_data(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    done = _python(os.path.join(ROOT, "apps", "train.py"),
                   "--flagfile=" + os.path.join(ROOT, "configs", "imagenet_freeat_he.cfg"),
                   f"--data_dir={empty}", f"--output_dir={out}")
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(empty) in errors[0] and "ILSVRC2012_img_train.tar" in errors[0]
    assert "Traceback" not in done.stderr and not out.exists()
