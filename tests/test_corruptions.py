"""The offline corruption benchmark: each operation against a hand-computed
case of the CIFAR-10-C parameter table, determinism per seed, any size and
1 or 3 channels, accuracy falling with severity, mCE, reports and bad input."""

import io
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from helpers import digits_arrays, undefended_digits_model
from he_keras import evaluation
from he_keras.evaluation.corruption_ops import (
    CORRUPTIONS, SEVERITIES, corrupt, largest_change, not_applicable_reason,
)
from he_keras.evaluation.corruption_selection import CorruptionSettings, corruption_settings, select_corruptions
from he_keras.evaluation.corruptions import corruption_accuracy, corruption_benchmark, corruption_errors
from he_keras.evaluation.corruption_report import (
    CORRUPTION_REPORT_FILES,
    corruption_table,
    write_corruption_report,
)

RANDOM = [name for name, spec in CORRUPTIONS.items() if spec.random]
LUMA = np.array([0.299, 0.587, 0.114])


def constant(value, n=4, size=32, channels=1):
    return np.full((n, size, size, channels), value, np.float32)


def smooth_images(n=2, size=32, channels=3, seed=0):
    """Images with edges and smooth parts, in [0.05, 0.95]."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, size)
    base = 0.5 + 0.3 * np.sin(6 * grid[:, None] + 3 * grid[None, :])
    x = base[None, :, :, None] + 0.15 * rng.uniform(-1, 1, (n, size, size, channels))
    return np.clip(x, 0.05, 0.95).astype(np.float32)


def impulse(size, channels=1):
    x = np.zeros((1, size, size, channels), np.float32)
    x[0, size // 2, size // 2] = 1.0
    return x


# === Determinism, shapes, ranges ===

def test_same_seed_same_images_other_seed_other_images():
    x = smooth_images(n=2, size=16)
    state = np.random.get_state()
    for name in CORRUPTIONS:
        first = corrupt(x, name, 3, seed=7)
        assert np.array_equal(first, corrupt(x, name, 3, seed=7)), name
        other = corrupt(x, name, 3, seed=8)
        assert np.array_equal(first, other) != (name in RANDOM), name
    # NumPy's global random state is never touched.
    assert all(np.array_equal(a, b) for a, b in zip(state[1:], np.random.get_state()[1:]))


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_in_unit_range_same_shape_and_dtype(size, channels):
    x = smooth_images(n=2, size=size, channels=channels)
    for name in select_corruptions("generated", "", None, (1, 5), x.shape[1:])[0]:
        for severity in (1, 5):
            out = corrupt(x, name, severity, seed=0)
            assert out.shape == x.shape and out.dtype == x.dtype, name
            assert 0.0 <= out.min() and out.max() <= 1.0, name
    assert corrupt(x.astype(np.float64), "fog", 2).dtype == np.float64


def test_which_corruptions_apply():
    assert select_corruptions("generated", "", image_shape=(32, 32, 3)) == (tuple(CORRUPTIONS), {})
    names, left_out = select_corruptions("generated", "", image_shape=(2, 2, 1))
    assert "glass_blur" not in names and "fog" in names and set(left_out) == {
        "glass_blur", "elastic_transform", "saturate", "defocus_blur", "gaussian_blur"
    }
    assert left_out["glass_blur"] == "glass_blur needs images of at least 3x3 pixels; received 2x2"
    assert len(evaluation.BENCHMARK_CORRUPTIONS) == 15
    assert evaluation.HELD_OUT_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert evaluation.corrupt is corrupt and evaluation.corruption_benchmark is corruption_benchmark


# === Noise: the reference's sigma, photon count and amount ===

# CIFAR-10-C (make_cifar_c.py); ImageNet-C's Gaussian sigmas are 0.08 ... 0.38.
GAUSSIAN_SIGMA = (0.04, 0.06, 0.08, 0.09, 0.10)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_gaussian_noise_has_the_reference_sigma(severity):
    noise = corrupt(constant(0.5, size=64), "gaussian_noise", severity) - 0.5
    assert np.std(noise) == pytest.approx(GAUSSIAN_SIGMA[severity - 1], rel=0.03)
    assert abs(np.mean(noise)) < 0.003


@pytest.mark.parametrize("severity,photons", [(1, 500), (3, 100), (5, 50)])
def test_shot_noise_has_the_poisson_variance_of_the_reference_photon_count(severity, photons):
    out = corrupt(constant(0.5, size=64), "shot_noise", severity)
    assert np.var(out) == pytest.approx(0.5 / photons, rel=0.06)
    # Poisson counts: every value is a multiple of 1 / photons.
    assert np.allclose(out * photons, np.round(out * photons), atol=1e-3)


@pytest.mark.parametrize("severity,amount", [(1, 0.01), (3, 0.03), (5, 0.07)])
def test_impulse_noise_flips_the_reference_fraction(severity, amount):
    out = corrupt(constant(0.5, size=64, channels=3), "impulse_noise", severity)
    flipped = out != 0.5
    bound = 5 * math.sqrt(amount * (1 - amount) / out.size)
    assert abs(flipped.mean() - amount) < bound
    assert set(np.unique(out[flipped])) == {0.0, 1.0}
    assert abs((out[flipped] == 1.0).mean() - 0.5) < 0.1


def test_speckle_noise_is_multiplicative_with_the_reference_sigma():
    out = corrupt(constant(0.5, size=64), "speckle_noise", 5)  # sigma 0.2
    assert np.std(out - 0.5) == pytest.approx(0.5 * 0.2, rel=0.03)
    assert np.array_equal(corrupt(constant(0.0), "speckle_noise", 5), constant(0.0))


# === Blur: impulse responses ===

def test_defocus_blur_kernel_is_the_reference_disk_scaled_by_size():
    # Severity 4 at 32 px: radius 1 (a 5-pixel cross), alias sigma 0.2 (negligible).
    out = corrupt(impulse(32), "defocus_blur", 4)[0, :, :, 0]
    c = 16
    cross = [out[c, c], out[c - 1, c], out[c + 1, c], out[c, c - 1], out[c, c + 1]]
    assert np.allclose(cross, 0.2, atol=1e-3)
    assert abs(out[c + 1, c + 1]) < 1e-3 and out.sum() == pytest.approx(1.0, abs=1e-5)
    # At 16 px the radius is 0.5: the disk is one pixel, and the blur vanishes.
    assert np.allclose(corrupt(impulse(16), "defocus_blur", 4), impulse(16), atol=1e-6)


@pytest.mark.parametrize("name", ["defocus_blur", "gaussian_blur"])
def test_a_blur_that_cannot_change_a_stored_pixel_does_not_apply(name):
    # Scaled to 8x8 digits, both kernels keep all but < 1/255 of the weight
    # on the centre pixel: the "corrupted" test set is the clean one.
    rng = np.random.default_rng(0)
    op = CORRUPTIONS[name].op
    for size, applies in ((8, False), (16, True), (28, True)):
        reason = not_applicable_reason(name, (size, size, 1))
        assert (reason is None) == applies, (size, reason)
        # The rule's bound holds on any image, and is reached by an impulse.
        x = np.concatenate([rng.uniform(size=(8, size, size, 1)), impulse(size).astype(np.float64)])
        change = max(np.abs(op(x, severity, rng) - x).max() for severity in SEVERITIES)
        bound = largest_change(name, (size, size, 1))
        assert change <= bound + 1e-9 and change == pytest.approx(bound, rel=1e-6)
        assert (bound >= 1 / 255) == applies
    assert "below 1/255" in not_applicable_reason(name, (8, 8, 3))


def test_gaussian_blur_impulse_response_is_the_sampled_gaussian():
    # Severity 5: sigma 1 at 32 px, so 2 at 64 px; scipy truncates at 4 sigma.
    out = corrupt(impulse(64), "gaussian_blur", 5)[0, :, :, 0].astype(np.float64)
    taps = np.exp(-np.arange(-8, 9) ** 2 / 8.0)
    taps /= taps.sum()
    np.testing.assert_allclose(out[32 - 8 : 32 + 9, 32 - 8 : 32 + 9], np.outer(taps, taps), atol=1e-6)


def test_motion_blur_impulse_response_is_the_one_sided_gaussian_kernel():
    # Severity 1 at 32 px: radius 6 (13 taps), sigma 1, angle in [-45, 45].
    out = corrupt(impulse(32), "motion_blur", 1, seed=3)[0, :, :, 0].astype(np.float64)
    weights = np.exp(-np.arange(13) ** 2 / 2.0)
    assert out.max() == pytest.approx(1 / weights.sum(), abs=1e-6)
    assert out[16, 16] == out.max() and out.sum() == pytest.approx(1.0, abs=1e-5)
    rows, cols = np.nonzero(out > 1e-9)
    assert cols.max() == 16  # the trail lies on one side (cos(angle) > 0)


def test_zoom_blur_averages_the_reference_zoom_factors():
    # An impulse at the exact centre: every zoom keeps the centre, and the
    # neighbour gets 1 - 1/z from each zoom z = 1, 1.01, ..., 1.06 (severity 1).
    out = corrupt(impulse(33), "zoom_blur", 1)[0, :, :, 0]
    factors = 1 + 0.01 * np.arange(7)
    assert out[16, 16] == pytest.approx(1.0, abs=1e-6)
    assert out[16, 17] == pytest.approx(np.sum(1 - 1 / factors) / 8, abs=1e-6)


def test_glass_blur_gives_each_pixel_an_up_left_neighbours_value():
    # Severity 1 at 32 px: sigma 0.05 (no blur), d = 1: every pixel from row
    # and column 2 on takes the value at offset (dy, dx) in {-1, 0}^2.
    x = (np.random.default_rng(0).permutation(32 * 32) / 1024).reshape(1, 32, 32, 1)
    out = corrupt(x.astype(np.float32), "glass_blur", 1)[0, :, :, 0]
    x = x[0, :, :, 0].astype(np.float32)
    for h in range(2, 32):
        for w in range(2, 32):
            assert out[h, w] in (x[h, w], x[h - 1, w], x[h, w - 1], x[h - 1, w - 1])
    assert np.array_equal(out[:2], x[:2]) and np.array_equal(out[:, :2], x[:, :2])
    assert not np.array_equal(out, x)


# === Weather ===

@pytest.mark.parametrize("severity,thickness", [(1, 0.2), (3, 0.75), (5, 1.5)])
def test_fog_blends_a_fractal_to_the_reference_bounds(severity, thickness):
    # On a constant v (a 32 px map covers the image): min v^2 / (v + t), max v.
    out = corrupt(constant(0.5), "fog", severity).astype(np.float64)
    assert out.max(axis=(1, 2, 3)) == pytest.approx([0.5] * 4, abs=1e-6)
    assert out.min(axis=(1, 2, 3)) == pytest.approx([0.25 / (0.5 + thickness)] * 4, abs=1e-6)


@pytest.mark.parametrize("severity,a,b", [(1, 1, 0.2), (3, 0.9, 0.4), (5, 0.75, 0.45)])
def test_frost_is_the_reference_blend_of_image_and_texture(severity, a, b):
    texture = corrupt(constant(0.0, channels=3), "frost", severity).astype(np.float64) / b
    assert 0.0 <= texture.min() and texture.max() <= 1.0 and 0.2 < texture.mean() < 0.8
    x = smooth_images(n=4)
    out = corrupt(x, "frost", severity).astype(np.float64)
    np.testing.assert_allclose(out, np.clip(a * x + b * texture, 0, 1), atol=1e-6)


def test_snow_whitens_by_the_reference_blend_and_adds_flakes():
    # Severity 1: blend 0.95, so black turns into 0.05 * 0.5 outside the flakes.
    out = corrupt(constant(0.0, size=64), "snow", 1)
    assert out.min() == pytest.approx(0.025, abs=1e-6)
    assert (out > 0.03).mean() > 0.005
    assert np.array_equal(corrupt(constant(1.0), "snow", 5), constant(1.0))


def test_spatter_blends_mud_and_adds_water_at_the_reference_intensity():
    mud = (np.array([63, 42, 20]) / 255).astype(np.float32)
    x = np.broadcast_to(mud, (4, 32, 32, 3)).copy()
    np.testing.assert_allclose(corrupt(x, "spatter", 5), x, atol=1e-6)  # mud on mud
    water = np.array([175, 238, 238]) / 255
    out = corrupt(constant(0.0, channels=3), "spatter", 1).astype(np.float64)
    np.testing.assert_allclose(out.max(axis=(0, 1, 2)), 0.5 * water, atol=1e-6)
    grey = corrupt(constant(0.0), "spatter", 2)
    assert grey.max() == pytest.approx(0.5 * water @ LUMA, abs=1e-6)


# === Digital ===

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("severity,c", [(1, 0.05), (5, 0.3)])
def test_brightness_adds_the_reference_amount_to_the_hsv_value(channels, severity, c):
    x = smooth_images(channels=channels).astype(np.float64)
    out = corrupt(x, "brightness", severity).astype(np.float64)
    value = x.max(axis=-1)
    np.testing.assert_allclose(out.max(axis=-1), np.minimum(value + c, 1), atol=1e-6)
    # Hue and saturation stay: the channels keep their ratios.
    np.testing.assert_allclose(out * value[..., None], x * out.max(axis=-1)[..., None], atol=1e-6)


@pytest.mark.parametrize("severity,c", [(1, 0.75), (5, 0.15)])
def test_contrast_scales_deviations_from_the_mean_by_the_reference_factor(severity, c):
    x = smooth_images().astype(np.float64)
    out = corrupt(x, "contrast", severity).astype(np.float64)
    deviation = lambda a: a - a.mean(axis=(1, 2), keepdims=True)  # noqa: E731
    np.testing.assert_allclose(deviation(out), c * deviation(x), atol=1e-6)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-6)


@pytest.mark.parametrize("severity,a,b", [(1, 0.3, 0.0), (5, 2.5, 0.2)])
def test_saturate_maps_the_hsv_saturation_by_the_reference_table(severity, a, b):
    x = smooth_images().astype(np.float64)
    out = corrupt(x, "saturate", severity).astype(np.float64)
    saturation = lambda v: (v.max(-1) - v.min(-1)) / v.max(-1)  # noqa: E731
    np.testing.assert_allclose(saturation(out), np.clip(saturation(x) * a + b, 0, 1), atol=1e-5)
    np.testing.assert_allclose(out.max(-1), x.max(-1), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("severity,quality", [(1, 80), (3, 58), (5, 40)])
def test_jpeg_equals_pillows_round_trip_at_the_reference_quality(channels, severity, quality):
    pixels = np.round(smooth_images(n=3, size=28, channels=channels) * 255).astype(np.uint8)
    out = corrupt(pixels / np.float32(255), "jpeg_compression", severity)
    for image, got in zip(pixels, out):
        buffer = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if channels == 1 else image).save(
            buffer, format="JPEG", quality=quality
        )
        expected = np.asarray(Image.open(buffer)).reshape(image.shape)
        assert np.array_equal(np.round(got * 255).astype(np.uint8), expected)


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("severity,factor", [(1, 0.95), (5, 0.65)])
def test_pixelate_equals_box_downscale_and_upscale_by_the_reference_factor(size, severity, factor):
    x = smooth_images(n=2, size=size, channels=1)
    out = corrupt(x, "pixelate", severity)
    small = int(size * factor)
    for image, got in zip(x, out):
        pil = Image.fromarray(image[..., 0])
        expected = pil.resize((small, small), Image.Resampling.BOX).resize(
            (size, size), Image.Resampling.BOX
        )
        np.testing.assert_allclose(got[..., 0], np.asarray(expected), atol=1e-6)


def test_elastic_severity_1_is_the_reference_affine_warp():
    # Severity 1 has alpha = 0: no elastic field, so a linear ramp stays
    # linear away from the border; a constant image stays constant.
    rows, cols = np.mgrid[0:32, 0:32]
    ramp = (0.1 + 0.012 * cols + 0.008 * rows)[None, :, :, None].repeat(3, 0).astype(np.float32)
    out = corrupt(ramp, "elastic_transform", 1, seed=2).astype(np.float64)
    design = np.stack([np.ones(256), rows[8:24, 8:24].ravel(), cols[8:24, 8:24].ravel()], 1)
    for image in out:
        target = image[8:24, 8:24, 0].ravel()
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        assert np.abs(design @ coef - target).max() < 1e-5
    assert not np.allclose(out, ramp, atol=1e-3)
    np.testing.assert_allclose(corrupt(constant(0.3), "elastic_transform", 5), constant(0.3), atol=1e-6)


# === The benchmark ===

def constant_predictor(x, training=False):
    """Logits of a model that answers class 0 whatever it sees."""
    return tf.one_hot(tf.zeros(len(x), tf.int32), 10)


@pytest.fixture(scope="module")
def digits_benchmark():
    _, _, x, y = digits_arrays()
    return corruption_benchmark(
        undefended_digits_model(), x, y, severities=(1, 5), seed=0,
        reference_model=constant_predictor, dataset="digits", batch_size=360, per_point=True,
    )


def test_accuracy_falls_with_severity(digits_benchmark):
    result = digits_benchmark
    assert result["n_per_config"] == [360]
    assert result["not_applicable"].keys() == {"saturate", "defocus_blur", "gaussian_blur"}
    accuracy = result["accuracy"]
    # Margins of several points, not of a prediction or two: any model trained
    # as `undefended_digits_model` loses about 9 points on average from
    # severity 1 to 5 (40 on glass blur, fog and contrast).
    mean = {s: np.mean([acc[s] for acc in accuracy.values()]) for s in ("1", "5")}
    assert mean["5"] < mean["1"] - 0.04, accuracy
    for name in ("glass_blur", "fog", "contrast"):
        assert accuracy[name]["5"] < accuracy[name]["1"] - 0.1, accuracy[name]
    assert result["mCA"] < result["clean_accuracy"]
    assert result["mCA"] == pytest.approx(np.mean([
        v for c, v in result["per_corruption"].items() if c not in result["held_out"]
    ]))


def test_a_test_set_in_chunks_gives_the_same_report(digits_benchmark):
    """Chunk 0 is corrupted as one call would; the later chunks draw their own
    noise (`part`); the counts cover every point of every chunk."""
    _, _, x, y = digits_arrays()
    common = dict(severities=(1, 5), seed=0, reference_model=constant_predictor, dataset="digits",
                  batch_size=360, per_point=True)
    one = evaluation.corruption_benchmark_chunks(undefended_digits_model(), lambda: [(x, y)], **common)
    for result in (one, digits_benchmark):
        result.pop("seconds")
    assert one == digits_benchmark
    reads = []

    def chunks():
        reads.append(1)
        return [(x[lo : lo + 120], y[lo : lo + 120]) for lo in (0, 120, 240)]

    chunked = evaluation.corruption_benchmark_chunks(undefended_digits_model(), chunks, **common)
    assert chunked["n_per_config"] == [360] and len(chunked["point_correct"]) == 360
    # Clean pass, one pass per (corruption, severity) pair, and the peek at the image shape.
    assert len(reads) == 2 + 2 * len(chunked["accuracy"])
    assert chunked["clean_accuracy"] == pytest.approx(one["clean_accuracy"], abs=1.5 / 360)
    # A deterministic corruption gives the same images whatever the chunks.
    for severity in ("1", "5"):
        assert chunked["accuracy"]["contrast"][severity] == pytest.approx(
            one["accuracy"]["contrast"][severity], abs=1.5 / 360
        )
    second = x[120:240]
    assert np.array_equal(corrupt(second, "gaussian_noise", 3, seed=0, part=1),
                          corrupt(second, "gaussian_noise", 3, seed=0, part=1))
    assert not np.array_equal(corrupt(second, "gaussian_noise", 3, seed=0, part=1),
                              corrupt(second, "gaussian_noise", 3, seed=0))
    with pytest.raises(ValueError, match="part"):
        corrupt(second, "gaussian_noise", 3, seed=0, part=-1)
    with pytest.raises(ValueError, match="empty"):
        evaluation.corruption_benchmark_chunks(undefended_digits_model(), lambda: [], **common)


def test_per_point_counts_pair_points_and_average_to_the_mca(digits_benchmark):
    result = digits_benchmark
    benchmark = [c for c in result["accuracy"] if c not in result["held_out"]]
    assert result["point_configs"] == 2 * len(benchmark)
    correct = np.array(result["point_correct"])
    assert correct.shape == (360,) and correct.min() >= 0 and correct.max() <= result["point_configs"]
    assert correct.mean() / result["point_configs"] == pytest.approx(result["mCA"])
    # Counts per point, not a spread-out total: some points survive every
    # corruption and some fall to several.
    assert correct.max() == result["point_configs"] and np.unique(correct).size > 3
    # The held-out corruptions alone give no per-point outcome.
    _, _, x, y = digits_arrays()
    with pytest.raises(ValueError, match="benchmark corruptions"):
        corruption_benchmark(undefended_digits_model(), x[:8], y[:8], corruptions=["spatter"],
                             severities=(1,), per_point=True)


def test_benchmark_reports_the_corruption_errors_against_the_reference(digits_benchmark):
    result = digits_benchmark
    reference = result["reference"]["accuracy"]
    for name, acc in result["accuracy"].items():
        expected = (2 - acc["1"] - acc["5"]) / (2 - reference[name]["1"] - reference[name]["5"])
        assert result["CE"][name] == pytest.approx(expected)
    assert result["mCE"] < 0.5
    # The constant predictor errs as much on corrupted as on clean images:
    # every relative CE has a zero denominator, so none is defined.
    assert set(result["relative_CE"].values()) == {None} and result["relative_mCE"] is None


def test_corruption_errors_follow_hendrycks_definitions():
    model = {"fog": {"1": 0.9, "5": 0.5}, "spatter": {"1": 1.0, "5": 0.8}}
    reference = {"fog": {"1": 0.8, "5": 0.4}, "spatter": {"1": 0.9, "5": 0.9}}
    errors = corruption_errors(model, reference, ("spatter",), 0.95, 0.9)
    assert errors["CE"]["fog"] == pytest.approx((0.1 + 0.5) / (0.2 + 0.6))
    assert errors["relative_CE"]["fog"] == pytest.approx((0.6 - 2 * 0.05) / (0.8 - 2 * 0.1))
    # spatter: the reference is no worse than clean, the relative CE undefined.
    assert errors["relative_CE"]["spatter"] is None
    assert errors["mCE"] == errors["CE"]["fog"]  # held-out corruptions stay out
    assert corruption_errors(model, model)["relative_mCE"] is None


def test_report_files_table_and_progress_bar(tmp_path, capsys):
    _, _, x, y = digits_arrays()
    result = corruption_benchmark(
        undefended_digits_model(), x[:16], y[:16], corruptions=["fog", "spatter"],
        severities=(2,), verbose=1,
    )
    assert "config" in capsys.readouterr().out
    paths = write_corruption_report(result, str(tmp_path / "out"))
    assert [p.split("/")[-1] for p in paths] == list(CORRUPTION_REPORT_FILES)
    assert json.loads((tmp_path / "out" / "corruptions.json").read_text())["accuracy"].keys() == {
        "fog", "spatter"
    }
    md = (tmp_path / "out" / "corruptions.md").read_text()
    assert "| fog |" in md and "corruption_heatmap.png" in md
    table = corruption_table(result)
    assert "mCA (1 benchmark corruptions)" in table and "held-out mCA (1 held-out" in table
    assert (tmp_path / "out" / "corruption_heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_tfds_and_generated_sources_give_the_same_report_structure():
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(inputs)))
    x, y = smooth_images(n=6), np.arange(6) % 10
    common = dict(corruptions=["fog", "spatter"], severities=(1, 5), reference_model=constant_predictor)
    with tfds.testing.mock_data(num_examples=6):
        from_tfds = corruption_accuracy(model, "cifar10", 6, clean=(x, y), **common)
    generated = corruption_benchmark(model, x, y, dataset="cifar10", **common)
    assert set(generated) - set(from_tfds) == {"seed"} and set(from_tfds) <= set(generated)
    assert from_tfds["not_applicable"] == {} and corruption_table(from_tfds)
    assert from_tfds["source"] == "tfds" and from_tfds["dataset"] == "cifar10_corrupted"
    for result in (from_tfds, generated):
        assert result["held_out"] == ["spatter"] and result["n_per_config"] == [6]
        assert result["mCA"] == pytest.approx(result["per_corruption"]["fog"])
        assert set(result["reference"]) == {"model", "clean_accuracy", "accuracy", "per_corruption",
                                            "mCA", "held_out_mCA"}


# === Bad input ===

BAD_CALLS = [
    ("unknown_name", dict(corruption="fogg"), "Unknown corruption 'fogg'. Expected one of gaussian_noise"),
    ("severity_0", dict(severity=0), "Severities must be integers in 1-5. Received: severity=0"),
    ("severity_6", dict(severity=6), "Received: severity=6"),
    ("severity_float", dict(severity=2.0), "Received: severity=2.0"),
    ("too_small", dict(x=constant(0.5, size=2), corruption="elastic_transform"),
     "elastic_transform needs images of at least 3x3 pixels; received 2x2"),
    ("grey_saturate", dict(x=constant(0.5), corruption="saturate"),
     "saturate needs images with 3 channels; received 1 channel"),
    ("two_channels", dict(x=constant(0.5, channels=2)), "(height, width, 1 or 3 channels)"),
    ("integers", dict(x=np.zeros((1, 8, 8, 1), np.uint8)), "must be floating point in [0, 1]"),
    ("above_one", dict(x=constant(1.5)), "must lie in [0, 1]"),
    ("negative_seed", dict(seed=-1), "`seed` must be an integer >= 0"),
]


@pytest.mark.parametrize("case,kwargs,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_corrupt_names_the_bad_value_and_what_is_allowed(case, kwargs, message):
    call = dict(x=constant(0.5, channels=3), corruption="fog", severity=1, seed=0)
    call.update(kwargs)
    with pytest.raises(ValueError) as err:
        corrupt(call["x"], call["corruption"], call["severity"], seed=call["seed"])
    assert message in str(err.value)


def test_benchmark_selection_rejects_before_any_compute():
    with pytest.raises(ValueError, match="saturate needs images with 3 channels"):
        select_corruptions("generated", "digits", ["fog", "saturate"], (1,), (8, 8, 1))
    with pytest.raises(ValueError, match="No tfds corrupted version"):
        select_corruptions("tfds", "digits", None)
    with pytest.raises(ValueError, match="frosted_glass_blur"):
        select_corruptions("tfds", "cifar10", ["glass_blur"])
    with pytest.raises(ValueError, match="defocus_blur changes no pixel of 8x8 images"):
        select_corruptions("generated", "digits", ["defocus_blur"], (1,), (8, 8, 1))
    names, skipped = select_corruptions("generated", "digits", None, (1, 5), (8, 8, 1))
    assert "saturate" not in names and set(skipped) == {"saturate", "defocus_blur", "gaussian_blur"}
    assert len(select_corruptions("tfds", "cifar10")[0]) == 19


SETTINGS = [
    ("unknown_name", dict(corruptions="fog,fogg"), "Unknown corruption 'fogg'. Expected one of"),
    ("empty_list", dict(corruptions=" , "), "`corruptions` must be 'all' or a comma list"),
    ("severity_6", dict(severities="1,6"),
     "`severities` must be a comma list of integers in 1-5. Received: severities='1,6'"),
    ("severity_word", dict(severities="one"), "Received: severities='one'"),
    ("severity_float", dict(severities=[2.0]), "Received: severities='2.0'"),
    ("no_severity", dict(severities=""), "Received: severities=''"),
    ("tfds_digits", dict(source="tfds", dataset="digits"),
     "No tfds corrupted version of this dataset. Expected one of ['cifar10', 'imagenet2012']. "
     "Received: dataset='digits' (source='generated' corrupts any dataset)"),
    ("tfds_spelling", dict(corruptions="glass_blur", source="tfds", dataset="cifar10"),
     "Unknown corruption 'glass_blur' for cifar10_corrupted. Expected one of gaussian_noise"),
    ("unknown_source", dict(source="disk"), "`source` must be one of ('generated', 'tfds')"),
]


@pytest.mark.parametrize("case,kwargs,message", SETTINGS, ids=[c[0] for c in SETTINGS])
def test_corruption_settings_name_the_bad_value_and_what_is_allowed(case, kwargs, message):
    with pytest.raises(ValueError) as err:
        corruption_settings(**kwargs)
    assert message in str(err.value)


def test_corruption_settings_read_text_and_sequences_alike():
    assert corruption_settings() == CorruptionSettings("generated", None, (1, 2, 3, 4, 5))
    parsed = corruption_settings(" fog, contrast,fog ", ["5", " 1", "5"])
    assert parsed == CorruptionSettings("generated", ("fog", "contrast"), (5, 1))
    assert corruption_settings(["fog", "contrast"], (5, 1)) == parsed
    assert corruption_settings("all", "1", "tfds", "cifar10").corruptions is None
