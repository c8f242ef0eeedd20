"""The ImageNet input pipeline alone against the adversarial training step, in images/s.

Builds `--n_images` synthetic JPEGs of ImageNet-like sizes (shorter side
300-500 pixels, aspect 3:4 to 4:3, smooth content plus noise, quality 90;
held in memory, so disk reads are not timed) and measures, interleaved,
medians over `--repeats` rounds after a warm-up:

- `train pipeline`: the library's training stream (`he_keras.data.batches`
  with `augment="resized_crop_flip"`: shuffle, decode, random-resized 224
  crop, flip, batch, prefetch), images per second;
- `test pipeline`: decode, resize to 256 and center 224 crop (validation and
  evaluation), images per second;
- `<framework> step`: one training step of the framework on a 224x224 batch
  (`--model`, HE head), images per second.

The ratio pipeline / step says how many times faster the pipeline feeds
images than this CPU consumes them. For an accelerator the requirement is
stated from its throughput: a step of K attack iterations makes K + 1
forward-backward passes, so an accelerator doing R forward-backward images/s
consumes R / (K + 1) images/s (FreeAT's m replays: R / m), and the pipeline's
images/s per core times the cores feeding it must exceed that.

Usage (from bench/):
  python input_pipeline.py --model=preact_resnet18 --batch_size=32 --repeats=5 \
      --output=input_pipeline.json
"""

from __future__ import annotations

import os
import time

from absl import app, flags

# Defines --model, --image_size (unused: ImageNet crops are 224), --batch_size,
# --repeats, --inter_op_threads.
from he_overhead import interleaved_medians, make_trainer

FLAGS = flags.FLAGS
_N_IMAGES = flags.DEFINE_integer("n_images", 512, "Synthetic JPEGs in the stream.")
_BATCHES = flags.DEFINE_integer("batches", 8, "Batches per timed pipeline run.")
_FRAMEWORKS = flags.DEFINE_list("frameworks", ["freeat", "pgdat"], "Frameworks whose step is timed.")
_PGD_STEPS = flags.DEFINE_integer("pgd_steps", 7, "PGD-AT attack iterations K.")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def synthetic_jpegs(n: int, seed: int = 0) -> list:
    """`n` JPEG-encoded images of ImageNet-like sizes and content.

    Args:
        n: Number of images.
        seed: Seed of sizes and content.

    Returns:
        The encoded images (bytes).
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        short = int(rng.integers(300, 501))
        aspect = float(rng.uniform(3 / 4, 4 / 3))
        height, width = (short, int(short * aspect)) if aspect >= 1 else (int(short / aspect), short)
        # Smooth colour fields (a coarse grid upsampled) plus pixel noise: JPEG
        # sizes close to photographs', unlike pure noise or flat colour.
        coarse = rng.uniform(0, 255, (8, 8, 3)).astype("float32")
        smooth = tf.image.resize(coarse[None], (height, width), method="bicubic")[0].numpy()
        pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype("uint8")
        images.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return images


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import numpy as np
    import tensorflow as tf

    from he_keras.data import batches
    from he_keras.data.crops import resize_center_crop
    from he_keras.data.dataset import decode_image

    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    tf.get_logger().setLevel("ERROR")
    jpegs = synthetic_jpegs(_N_IMAGES.value)
    labels = np.arange(len(jpegs), dtype="int32") % 10
    encoded = tf.data.Dataset.from_tensor_slices((jpegs, labels))
    n_images = _BATCHES.value * FLAGS.batch_size
    if n_images > len(jpegs):
        raise app.UsageError(f"--batches x --batch_size = {n_images} exceeds --n_images={len(jpegs)}")
    rounds = iter(range(10**9))

    def train_pipeline():
        stream = batches(encoded, FLAGS.batch_size, shuffle=True, augment="resized_crop_flip",
                         seed=next(rounds), steps=_BATCHES.value)
        for _ in stream:
            pass

    def test_pipeline():
        stream = encoded.repeat().map(
            lambda image, label: (resize_center_crop(decode_image(image)), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).batch(FLAGS.batch_size).take(_BATCHES.value).prefetch(tf.data.AUTOTUNE)
        for _ in stream:
            pass

    x = tf.random.uniform((FLAGS.batch_size, 224, 224, 3), seed=1)
    y = tf.constant(labels[: FLAGS.batch_size])
    timed = {"train pipeline": train_pipeline, "test pipeline": test_pipeline}
    per_call = {"train pipeline": n_images, "test pipeline": n_images}
    for framework in _FRAMEWORKS.value:
        params = {"freeat": dict(replays=4), "pgdat": dict(steps=_PGD_STEPS.value)}.get(framework, {})
        trainer = make_trainer(framework, "he", FLAGS.model, 224, eps=4 / 255, **params)
        timed[f"{framework} step"] = lambda trainer=trainer: trainer.train_on_batch(x, y)
        per_call[f"{framework} step"] = FLAGS.batch_size
    started = time.time()
    medians = interleaved_medians(timed, FLAGS.repeats)
    rates = {name: per_call[name] / seconds for name, seconds in medians.items()}
    load = os.getloadavg()[0]
    print(f"{_N_IMAGES.value} synthetic JPEGs, batch {FLAGS.batch_size}, {os.cpu_count()} CPUs, "
          f"load {load:.2f}, {FLAGS.repeats} interleaved rounds (median):")
    for name, rate in rates.items():
        print(f"  {name:<16} {rate:8.1f} images/s")
    for framework in _FRAMEWORKS.value:
        ratio = rates["train pipeline"] / rates[f"{framework} step"]
        print(f"  train pipeline / {framework} step: {ratio:.1f}x")
    results = {
        "rates_images_per_s": rates, "median_seconds": medians, "load_average": load,
        "batch_size": FLAGS.batch_size, "model": FLAGS.model, "pgd_steps": _PGD_STEPS.value,
        "wall_seconds": time.time() - started, "cpus": os.cpu_count(),
    }
    if _OUTPUT.value:
        from he_keras.files import write_json

        write_json(_OUTPUT.value, results)


if __name__ == "__main__":
    app.run(main)
