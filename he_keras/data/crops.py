"""ImageNet-style crops of images of any size, in [0, 1] pixel space.

Training: `random_resized_crop` (torchvision's `RandomResizedCrop`, as in the
FreeAT ImageNet code); test: `resize_center_crop` (`Resize(256)` then
`CenterCrop(224)`). Both are stateless: the same seed gives the same crop.
"""

from __future__ import annotations

import math

import tensorflow as tf

CROP_SIZE = 224
RESIZE_SIZE = 256


def _resize(image: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    # Antialiased bilinear resizing averages with non-negative weights, so the
    # result stays in [0, 1] up to rounding, which the clip removes.
    resized = tf.image.resize(image, tf.stack([height, width]), antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)


def random_resized_crop(
    image: tf.Tensor,
    seed: tf.Tensor,
    size: int = CROP_SIZE,
    scale: tuple = (0.08, 1.0),
    ratio: tuple = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tf.Tensor:
    """A random crop of random area and aspect ratio, resized to `size`.

    torchvision's algorithm: draw `attempts` (area fraction uniform in
    `scale`, aspect ratio log-uniform in `ratio`) candidates and take the
    first that fits in the image at a uniformly random position; if none
    fits, take the largest centered crop with an aspect ratio in `ratio`.

    Args:
        image: `(height, width, channels)` float image in [0, 1], any size.
        seed: Stateless seed, shape `(2,)` integers.
        size: Side of the square output.
        scale: Range of the crop's area as a fraction of the image's.
        ratio: Range of the crop's width / height.
        attempts: Candidates drawn before the centered fallback.

    Returns:
        A `(size, size, channels)` float32 image in [0, 1].

    Example:

    ```python
    crop = random_resized_crop(tf.random.uniform((375, 500, 3)), seed=[0, 7])
    ```
    """
    shape_seed, position_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    )
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    draws = tf.random.stateless_uniform([attempts, 2], seed=shape_seed)
    area = h_f * w_f * (scale[0] + (scale[1] - scale[0]) * draws[:, 0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_low + (log_high - log_low) * draws[:, 1])
    crop_w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    # The centered fallback: the whole image, cut to the nearest allowed ratio.
    image_ratio = w_f / h_f
    fallback_w = tf.where(
        image_ratio > ratio[1], tf.cast(tf.round(h_f * ratio[1]), tf.int32), width
    )
    fallback_h = tf.where(
        image_ratio < ratio[0], tf.cast(tf.round(w_f / ratio[0]), tf.int32), height
    )
    found = tf.reduce_any(fits)
    crop_h = tf.where(found, crop_h[first], fallback_h)
    crop_w = tf.where(found, crop_w[first], fallback_w)
    # Uniform offsets in [0, height - crop_h] x [0, width - crop_w] when a
    # candidate fits; the centered position otherwise.
    uniform = tf.random.stateless_uniform([2], seed=position_seed)
    room = tf.stack([height - crop_h, width - crop_w])
    random_offset = tf.minimum(
        tf.cast(uniform * tf.cast(room + 1, tf.float32), tf.int32), room
    )
    offset = tf.where(found, random_offset, room // 2)
    crop = tf.slice(image, tf.stack([offset[0], offset[1], 0]), tf.stack([crop_h, crop_w, -1]))
    resized = _resize(crop, tf.constant(size), tf.constant(size))
    return tf.ensure_shape(resized, [size, size, image.shape[-1]])


def resize_center_crop(
    image: tf.Tensor, size: int = CROP_SIZE, resize: int = RESIZE_SIZE
) -> tf.Tensor:
    """Resizes the shorter side to `resize`, then takes the central square.

    Args:
        image: `(height, width, channels)` float image in [0, 1], any size.
        size: Side of the square output.
        resize: Length of the shorter side after resizing (aspect kept; the
            longer side is truncated to an integer as torchvision does).

    Returns:
        A `(size, size, channels)` float32 image in [0, 1].
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    short = tf.cast(tf.minimum(height, width), tf.float32)
    new_h = tf.cast(resize * tf.cast(height, tf.float32) / short, tf.int32)
    new_w = tf.cast(resize * tf.cast(width, tf.float32) / short, tf.int32)
    new_h = tf.where(height <= width, resize, new_h)
    new_w = tf.where(width <= height, resize, new_w)
    resized = _resize(image, new_h, new_w)
    top = tf.cast(tf.round((new_h - size) / 2), tf.int32)
    left = tf.cast(tf.round((new_w - size) / 2), tf.int32)
    crop = resized[top : top + size, left : left + size]
    return tf.ensure_shape(crop, [size, size, image.shape[-1]])
