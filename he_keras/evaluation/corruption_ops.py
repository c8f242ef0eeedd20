"""Common corruptions as image operations, for images of any size (offline).

Hendrycks & Dietterich (ICLR 2019) define the 15 benchmark corruptions of
CIFAR-10-C / ImageNet-C (noise: gaussian, shot, impulse; blur: defocus, glass,
motion, zoom; weather: snow, frost, fog; digital: brightness, contrast,
elastic, pixelate, JPEG) and 4 held-out ones (speckle noise, gaussian blur,
spatter, saturate) as image operations with one parameter row per severity
1-5. Every operation here follows the CIFAR-10-C table (`make_cifar_c.py` of
the reference repository `hendrycks/robustness`, written for 32x32 images);
the code is written here with NumPy, SciPy and Pillow, without OpenCV,
scikit-image or ImageMagick.

Adaptation to other image sizes, as MNIST-C (Mu & Gilmer, 2019) adapts the
corruptions to 28x28 digits: parameters measured in pixels (blur radii and
sigmas, glass-blur distances, motion lengths, spatter blob sizes) are scaled
by `scale = min(height, width) / 32`; parameters that are already relative to
the image (pixelate factors, zoom factors, elastic magnitudes, which the
reference writes as multiples of the image size) are applied to the actual
size. Noise and digital parameters do not depend on the size. On an 8x8
image (scale 1/4) the blurs stay below a pixel, as they would on the 32x32
image the 8x8 digit was reduced from; a blur whose kernel at that size keeps
so much weight on the centre pixel that no image can change by 1/255 (the
8-bit step) at any severity is not applicable there (`not_applicable_reason`):
scored, it would only repeat the clean accuracy inside the mCA.

Randomness comes from one `np.random.Generator` per call of `corrupt`,
seeded from `(seed, corruption, severity)`; NumPy's global random state is
never used, so the same images and seed give the same corrupted images bit
for bit (with the same NumPy, SciPy and Pillow).

Images are float arrays in [0, 1] of shape `(batch, height, width,
channels)` with 1 or 3 channels; a grey image is treated as the reference
treats an RGB image whose three channels are equal (its luma is itself).
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from he_keras.validation import validate_images

SEVERITIES = (1, 2, 3, 4, 5)
# The reference's image size: pixel parameters scale by size / REFERENCE_SIZE.
REFERENCE_SIZE = 32
# ITU-R BT.601 luma weights (Pillow's and OpenCV's RGB -> grey).
LUMA = np.array([0.299, 0.587, 0.114])
# Images corrupted per step inside `corrupt` (bounds the temporary arrays).
CHUNK = 256
# A corruption that cannot change any pixel by this much (the 8-bit step)
# leaves every stored image as it was.
NO_CHANGE = 1 / 255


def _scale(x: np.ndarray) -> float:
    """Factor of the pixel-length parameters for images `x` (1 at 32x32)."""
    return min(x.shape[1:3]) / REFERENCE_SIZE


def _gray(x: np.ndarray) -> np.ndarray:
    """Luma `(n, h, w, 1)` of RGB images; grey images are their own luma."""
    return x if x.shape[-1] == 1 else (x @ LUMA)[..., None]


def _color(rgb: Sequence[int], channels: int) -> np.ndarray:
    """An RGB colour (0-255) as `channels` values in [0, 1] (its luma for 1)."""
    value = np.asarray(rgb, float) / 255.0
    return np.array([value @ LUMA]) if channels == 1 else value


def _spatial_gaussian(x: np.ndarray, sigma: float, mode: str, truncate: float = 4.0) -> np.ndarray:
    """Gaussian blur over the two image axes of `(n, h, w[, c])` arrays."""
    sigmas = (0, sigma, sigma) + (0,) * (x.ndim - 3)
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def _sample(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, mode: str) -> np.ndarray:
    """Bilinear samples of each image at per-image coordinates.

    Args:
        x: Images `(n, h, w, c)`.
        rows: Row coordinates `(n, h, w)` (pixel centres at integers).
        cols: Column coordinates `(n, h, w)`.
        mode: `scipy.ndimage.map_coordinates` boundary mode.

    Returns:
        The sampled images `(n, h, w, c)`.
    """
    batch = np.broadcast_to(np.arange(len(x))[:, None, None], rows.shape)
    coords = np.stack([batch, rows, cols])
    return np.stack(
        [ndimage.map_coordinates(x[..., c], coords, order=1, mode=mode) for c in range(x.shape[-1])],
        axis=-1,
    )


def _zoom_axis(x: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """Zooms along one axis by `factor` about its centre (linear interpolation)."""
    size = x.shape[axis]
    centre = (size - 1) / 2
    source = np.clip((np.arange(size) - centre) / factor + centre, 0, size - 1)
    low = np.minimum(np.floor(source).astype(int), max(size - 2, 0))
    high = np.minimum(low + 1, size - 1)
    frac = (source - low).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


def _zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zooms `(n, h, w, c)` images by `factor` about their centre, keeping the size."""
    return _zoom_axis(_zoom_axis(x, 1, factor), 2, factor)


def _motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's `-motion-blur radius x sigma + angle`, one angle per image.

    Each output pixel is the average of the `2 * ceil(radius) + 1` pixels
    `i = 0, 1, ...` steps away along `angle` (offsets rounded to whole
    pixels), weighted by `exp(-i^2 / (2 sigma^2))` and normalized; pixels
    beyond the border repeat the edge (ImageMagick's default virtual pixels).

    Args:
        x: Images `(n, h, w, c)`.
        radius: Kernel radius in pixels.
        sigma: Gaussian fall-off along the kernel, in pixels.
        angles: Direction of each image's blur in degrees, `(n,)`.

    Returns:
        The blurred images.
    """
    n, height, width, _ = x.shape
    steps = np.arange(2 * int(np.ceil(radius)) + 1)
    weights = np.exp(-(steps**2) / (2 * sigma**2))
    weights /= weights.sum()
    theta = np.deg2rad(angles)[:, None]
    dx = np.ceil(steps * np.cos(theta) - 0.5).astype(int)
    dy = np.ceil(steps * np.sin(theta) - 0.5).astype(int)
    batch = np.arange(n)[:, None, None]
    out = np.zeros_like(x)
    for i, weight in enumerate(weights):
        rows = np.clip(np.arange(height)[None] + dy[:, i : i + 1], 0, height - 1)
        cols = np.clip(np.arange(width)[None] + dx[:, i : i + 1], 0, width - 1)
        out += weight * x[batch, rows[:, :, None], cols[:, None, :]]
    return out


def _plasma(rng: np.random.Generator, n: int, height: int, width: int, decay: float) -> np.ndarray:
    """Diamond-square height maps in [0, 1], `(n, height, width)`.

    The reference's `plasma_fractal`: a periodic map whose side is a power of
    two (the smallest covering the image; the reference uses 32 for CIFAR and
    256 cropped to 224 for ImageNet), each new point the mean of its four
    neighbours plus `wibble * U(-wibble, wibble)`, `wibble` starting at 100
    and divided by `decay` at each halving of the step; cropped to the image
    and normalized to [0, 1].
    """
    side = 1 << max(1, int(np.ceil(np.log2(max(height, width)))))
    grid = np.zeros((n, side, side))
    step, wibble = side, 100.0

    def jitter(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[:, ::step, ::step]
        total = corners + np.roll(corners, -1, axis=1)
        grid[:, half::step, half::step] = jitter(total + np.roll(total, -1, axis=2))
        centres = grid[:, half::step, half::step]
        grid[:, ::step, half::step] = jitter(
            corners + np.roll(corners, -1, axis=2) + centres + np.roll(centres, 1, axis=1)
        )
        grid[:, half::step, ::step] = jitter(
            corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=2)
        )
        step, wibble = half, wibble / decay
    grid = grid[:, :height, :width]
    low = grid.min(axis=(1, 2), keepdims=True)
    return (grid - low) / (grid.max(axis=(1, 2), keepdims=True) - low)


# --- noise ---------------------------------------------------------------

def _gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Additive N(0, sigma^2) noise per pixel and channel.

    CIFAR-10-C table: sigma = 0.04, 0.06, 0.08, 0.09, 0.10 (ImageNet-C uses
    0.08 ... 0.38). Size-independent.
    """
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return x + rng.normal(0.0, sigma, x.shape)


def _shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: `Poisson(x * photons) / photons` per pixel and channel.

    CIFAR-10-C table: photons = 500, 250, 100, 75, 50. Size-independent.
    """
    photons = (500, 250, 100, 75, 50)[severity - 1]
    return rng.poisson(x * photons) / photons


def _impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise (scikit-image's `random_noise(mode="s&p")`).

    Each pixel value (each channel separately) is replaced with probability
    `amount`, by 1 or 0 with equal odds. CIFAR-10-C table: amount = 0.01,
    0.02, 0.03, 0.05, 0.07. Size-independent.
    """
    amount = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    flipped = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    return np.where(flipped, salt.astype(x.dtype), x)


def _speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise `x + x * N(0, sigma^2)` (held out).

    CIFAR-10-C table: sigma = 0.06, 0.1, 0.12, 0.16, 0.2. Size-independent.
    """
    sigma = (0.06, 0.1, 0.12, 0.16, 0.2)[severity - 1]
    return x + x * rng.normal(0.0, sigma, x.shape)


# --- blur ----------------------------------------------------------------

def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's defocus kernel: a disk sampled at pixel centres
    (`x^2 + y^2 <= radius^2`), normalized, then smoothed by a 3x3 Gaussian
    of sigma `alias_blur` (5x5 for radii above 8), as OpenCV's `GaussianBlur`
    builds it. The support is cut to where the kernel is non-zero."""
    half = 1 if radius <= 8 else 2
    reach = int(np.floor(radius)) + half
    grid = np.arange(-reach, reach + 1)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2).astype(float)
    disk /= disk.sum()
    taps = np.arange(-half, half + 1)
    gauss = np.exp(-(taps**2) / (2 * alias_blur**2)) if alias_blur > 0 else (taps == 0).astype(float)
    gauss /= gauss.sum()
    kernel = ndimage.convolve1d(disk, gauss, axis=0, mode="constant")
    return ndimage.convolve1d(kernel, gauss, axis=1, mode="constant")


def _defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Convolution with an anti-aliased disk (OpenCV's `filter2D`, reflect-101 border).

    CIFAR-10-C table (radius, alias sigma): (0.3, 0.4), (0.4, 0.5), (0.5, 0.6),
    (1, 0.2), (1.5, 0.1); both are pixel lengths, scaled by size / 32.
    """
    radius, alias = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))[severity - 1]
    scale = _scale(x)
    kernel = _disk_kernel(radius * scale, alias * scale)
    return ndimage.correlate(x, kernel[None, :, :, None], mode="mirror")


def _glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, local pixel displacement, Gaussian blur.

    CIFAR-10-C table (sigma, max distance d, iterations): (0.05, 1, 1),
    (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2). Each iteration
    visits the pixels from the bottom-right corner up and left (rows and
    columns `size - d` down to `d + 1`) and gives each the current value of
    the pixel `(dy, dx)` away, `dy, dx` uniform integers in `[-d, d)` (the
    reference's `randint(-d, d)` excludes `+d`), each image with its own
    offsets. The reference writes this step as a swap, but on the pixel
    views of an RGB array NumPy's tuple swap copies the far pixel and writes
    the near one back unchanged; the copy is what produced CIFAR-10-C, and
    is what is done here. Sigma and d are pixel lengths scaled by size / 32
    (d at least 1); the reference's intermediate 8-bit rounding is left out.
    """
    sigma, distance, iterations = (
        (0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)
    )[severity - 1]
    scale = _scale(x)
    distance = max(1, int(round(distance * scale)))
    out = _spatial_gaussian(x, sigma * scale, mode="nearest")
    n, height, width, _ = x.shape
    rows = range(height - distance, distance, -1)
    cols = range(width - distance, distance, -1)
    offsets = rng.integers(-distance, distance, size=(iterations, len(rows), len(cols), n, 2))
    batch = np.arange(n)
    for it in range(iterations):
        for i, h in enumerate(rows):
            for j, w in enumerate(cols):
                dx, dy = offsets[it, i, j, :, 0], offsets[it, i, j, :, 1]
                out[batch, h, w] = out[batch, h + dy, w + dx]
    return _spatial_gaussian(out, sigma * scale, mode="nearest")


def _motion_blur_op(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageMagick motion blur (see `_motion_blur`) at an angle U(-45, 45) degrees per image.

    CIFAR-10-C table (radius, sigma): (6, 1), (6, 1.5), (6, 2), (8, 2),
    (9, 2.5); both pixel lengths, scaled by size / 32.
    """
    radius, sigma = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))[severity - 1]
    scale = _scale(x)
    return _motion_blur(x, radius * scale, sigma * scale, rng.uniform(-45, 45, len(x)))


# The reference's np.arange(1, stop, 0.01) holds 7, 12, 16, 21 and 26 factors.
_ZOOM_FACTORS = tuple(tuple(1 + 0.01 * k for k in range(count)) for count in (7, 12, 16, 21, 26))


def _zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Mean of the image and its zooms by 1, 1.01, ... about the centre.

    CIFAR-10-C table: the factors of `np.arange(1, s, 0.01)` for s = 1.06,
    1.11, 1.16, 1.21, 1.26 (7, 12, 16, 21, 26 factors, as that arange
    evaluates). The factors are relative, so the same at every size. The
    reference zooms a crop of `ceil(size / factor)` pixels, which leaves
    factors below `size / (size - 1)` without effect; here each zoom is taken
    about the exact centre with bilinear interpolation.
    """
    factors = _ZOOM_FACTORS[severity - 1]
    total = x.copy()
    for factor in factors:
        total += _zoom(x, factor)
    return total / (len(factors) + 1)


def _gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur (scikit-image `gaussian`: edge-repeating border, 4 sigma) (held out).

    CIFAR-10-C table: sigma = 0.4, 0.6, 0.7, 0.8, 1; pixels, scaled by size / 32.
    """
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1]
    return _spatial_gaussian(x, sigma * _scale(x), mode="nearest")


# --- weather -------------------------------------------------------------

def _snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Snow flakes drawn by motion-blurring a thresholded noise layer.

    CIFAR-10-C table (mean, std, zoom, threshold, blur radius, blur sigma,
    blend): (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8). As the reference: a N(mean, std)
    layer zoomed about the centre (flakes `zoom` pixels wide), values below
    the threshold set to 0, motion-blurred at U(-135, -45) degrees; the
    image is whitened to `blend * x + (1 - blend) * max(x, 1.5 * luma + 0.5)`
    and the layer is added twice (as is and turned by 180 degrees). The blur
    radius and sigma are scaled by size / 32, the zoom is relative.
    """
    mean, std, zoom, threshold, radius, sigma, blend = (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    )[severity - 1]
    scale = _scale(x)
    layer = _zoom(rng.normal(mean, std, x.shape[:3])[..., None], zoom)
    layer = np.clip(np.where(layer < threshold, 0.0, layer), 0, 1)
    layer = _motion_blur(layer, radius * scale, sigma * scale, rng.uniform(-135, -45, len(x)))
    whitened = blend * x + (1 - blend) * np.maximum(x, 1.5 * _gray(x) + 0.5)
    return whitened + layer + layer[:, ::-1, ::-1]


def _frost_texture(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """Procedural frost `(n, h, w)` in [0, 1]: a grainy haze plus crystal veins.

    A stand-in for the reference's six frost photographs, which cannot be
    shipped: a rough diamond-square map (decay 1.3) as the haze and the
    ridges `(1 - |2 F - 1|)^4` of a second map (decay 1.6) as branching ice
    veins, mixed 45 / 55. Not calibrated against the photographs.
    """
    haze = _plasma(rng, n, height, width, decay=1.3)
    veins = (1 - np.abs(2 * _plasma(rng, n, height, width, decay=1.6) - 1)) ** 4
    return 0.45 * haze + 0.55 * veins


def _frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """`a * x + b * frost`, frost a texture of the image's size.

    CIFAR-10-C table (a, b): (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4),
    (0.75, 0.45). The reference crops a random 32x32 patch of one of six
    frost photographs; here each image gets a texture synthesized from the
    seed (`_frost_texture`), the same on every channel.
    """
    a, b = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))[severity - 1]
    texture = _frost_texture(rng, *x.shape[:3])
    return a * x + b * texture[..., None]


def _fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Plasma-fractal fog: `(x + t * F) * max(x) / (max(x) + t)`.

    CIFAR-10-C table (thickness t, decay): (0.2, 3), (0.5, 3), (0.75, 2.5),
    (1, 2), (1.5, 1.75); F is a diamond-square map (`_plasma`) of the image's
    size per image, max(x) the image's maximum. Relative, so the same at
    every size.
    """
    thickness, decay = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))[severity - 1]
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    fog = _plasma(rng, *x.shape[:3], decay=decay)[..., None]
    return (x + thickness * fog) * peak / (peak + thickness)


def _spatter(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Water drops (severities 1-3) or mud (4-5) (held out).

    CIFAR-10-C table (mean, std, sigma, threshold, intensity, mud):
    (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
    (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
    (0.65, 0.1, 0.5, 0.68, 0.6, 1). A N(mean, std) layer blurred by sigma and
    thresholded marks the liquid. Mud: the liquid mask blurred by
    `intensity` (a sigma), kept where >= 0.8, blends the image towards mud
    brown (63, 42, 20). Water: the reference shades the liquid by an embossed,
    histogram-equalized distance to its Canny edges; here the edges are the
    mask's boundary and the distance is SciPy's exact Euclidean one
    (truncated at 20 pixels), equalized, embossed with the reference kernel,
    normalized to `intensity` at its maximum and added in pale turquoise
    (175, 238, 238). Sigmas and the truncation are scaled by size / 32;
    grey images use the colours' luma.
    """
    mean, std, sigma, threshold, intensity, mud = (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    )[severity - 1]
    scale = _scale(x)
    liquid = _spatial_gaussian(rng.normal(mean, std, x.shape[:3]), sigma * scale, mode="nearest")
    liquid[liquid < threshold] = 0
    if mud:
        mask = _spatial_gaussian((liquid > threshold).astype(float), intensity * scale, "nearest")
        mask = np.where(mask < 0.8, 0.0, mask)[..., None]
        return x * (1 - mask) + _color((63, 42, 20), x.shape[-1]) * mask
    shade = np.stack([_water_shade(layer, 20 * scale) for layer in liquid])
    return x + (intensity * shade)[..., None] * _color((175, 238, 238), x.shape[-1])


_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], float)


def _water_shade(liquid: np.ndarray, truncate: float) -> np.ndarray:
    """Water shading of one liquid layer `(h, w)`, in [0, 1] with maximum 1
    (all zeros when there is no liquid); see `_spatter`."""
    wet = liquid > 0
    edges = wet & ~ndimage.binary_erosion(wet)
    if not edges.any():
        return np.zeros_like(liquid)
    distance = np.minimum(ndimage.distance_transform_edt(~edges), truncate)
    levels = np.floor(ndimage.uniform_filter(distance, 3, mode="nearest") * 255 / truncate)
    values, inverse, counts = np.unique(levels, return_inverse=True, return_counts=True)
    equalized = (np.cumsum(counts) / levels.size)[inverse.reshape(levels.shape)]
    embossed = np.clip(ndimage.correlate(equalized, _EMBOSS, mode="mirror"), 0, 1)
    shade = liquid * ndimage.uniform_filter(embossed, 3, mode="mirror")
    peak = shade.max()
    return shade / peak if peak > 0 else shade


# --- digital -------------------------------------------------------------

def _brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Adds `c` to the HSV value (clipped to 1), hue and saturation unchanged.

    CIFAR-10-C table: c = 0.05, 0.1, 0.15, 0.2, 0.3. With hue and saturation
    fixed every channel is proportional to the value V = max over channels,
    so the HSV round trip is a rescaling by `V' / V` (V' on black pixels,
    whose HSV saturation is 0). Grey images: V is the pixel. Size-independent.
    """
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    value = x.max(axis=-1, keepdims=True)
    new = np.clip(value + c, 0, 1)
    return np.where(value > 0, x * new / np.where(value > 0, value, 1), new)


def _saturate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """HSV saturation `s -> s * a + b` (clipped), hue and value unchanged (held out; RGB only).

    CIFAR-10-C table (a, b): (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1),
    (2.5, 0.2). With hue and value fixed each channel is `V - s V k` with
    `k = (V - channel) / (V - min)` fixed by the hue (grey pixels have hue 0,
    red, as in scikit-image: k = (0, 1, 1)). Size-independent.
    """
    a, b = ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))[severity - 1]
    value = x.max(axis=-1, keepdims=True)
    low = x.min(axis=-1, keepdims=True)
    chroma = value - low
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1), 0)
    hue_weights = np.where(chroma > 0, (value - x) / np.where(chroma > 0, chroma, 1), [0.0, 1.0, 1.0])
    return value - np.clip(saturation * a + b, 0, 1) * value * hue_weights


def _contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Deviations from each image's per-channel mean scaled by `c`.

    CIFAR-10-C table: c = 0.75, 0.5, 0.4, 0.3, 0.15. Size-independent.
    """
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * c + mean


def _elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Random affine warp, then a smooth random displacement field.

    CIFAR-10-C table, in multiples of the image size S (alpha, sigma, affine):
    (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
    (0.1, 0.03, 0.03); the reference writes them with S = 32, here S =
    min(height, width). As the reference: the three points centre + (q, q),
    centre + (q, -q), centre - (q, q), q = S // 3, each move by U(-affine,
    affine) per coordinate and define the affine warp (bilinear, reflect-101
    border, as OpenCV's `warpAffine`); then each pixel moves by alpha times a
    U(-1, 1) field Gaussian-smoothed with sigma (3-sigma support, reflected
    border), sampled bilinearly with a reflected border.
    """
    alpha, sigma, affine = (
        (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)
    )[severity - 1]
    n, height, width, _ = x.shape
    size = min(height, width)
    alpha, sigma, affine = alpha * size, sigma * size, affine * size
    cx, cy, q = width // 2, height // 2, size // 3
    anchors = np.array([[cx + q, cy + q], [cx + q, cy - q], [cx - q, cy - q]], float)
    moved = anchors + rng.uniform(-affine, affine, size=(n, 3, 2))
    # The warp carries `anchors` onto `moved`; each output pixel (x, y, 1)
    # samples the input at `(x, y, 1) @ inverse`, the map from moved to anchors.
    inverse = np.linalg.solve(
        np.concatenate([moved, np.ones((n, 3, 1))], axis=2), np.broadcast_to(anchors, (n, 3, 2))
    )
    rows, cols = np.meshgrid(np.arange(height, dtype=float), np.arange(width, dtype=float), indexing="ij")
    points = np.stack([cols, rows, np.ones_like(rows)], axis=-1)
    source = np.einsum("hwk,nkj->nhwj", points, inverse)
    warped = _sample(x, source[..., 1], source[..., 0], mode="mirror")
    dx = _spatial_gaussian(rng.uniform(-1, 1, (n, height, width)), sigma, "reflect", 3.0) * alpha
    dy = _spatial_gaussian(rng.uniform(-1, 1, (n, height, width)), sigma, "reflect", 3.0) * alpha
    return _sample(warped, rows + dy, cols + dx, mode="reflect")


def _pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Pillow BOX downscale to `int(size * c)` pixels, then BOX upscale back.

    CIFAR-10-C table: c = 0.95, 0.9, 0.85, 0.75, 0.65 of the side (the
    reference's `int(32 * c)`, here `int(height * c)` and `int(width * c)`).
    Resized in Pillow's 32-bit float mode, one channel at a time, so no 8-bit
    rounding is added.
    """
    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    height, width = x.shape[1:3]
    small = (max(1, int(width * c)), max(1, int(height * c)))
    out = np.empty_like(x)
    for i in range(len(x)):
        for ch in range(x.shape[-1]):
            image = Image.fromarray(x[i, :, :, ch].astype(np.float32))
            out[i, :, :, ch] = np.asarray(
                image.resize(small, Image.Resampling.BOX).resize((width, height), Image.Resampling.BOX)
            )
    return out


def _jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Pillow JPEG round trip of the 8-bit image at quality q.

    CIFAR-10-C table: q = 80, 65, 58, 50, 40. Grey images are saved as
    8-bit grey ("L"), colour ones as RGB. Size-independent.
    """
    quality = (80, 65, 58, 50, 40)[severity - 1]
    pixels = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    out = np.empty_like(x)
    for i, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            buffer, format="JPEG", quality=quality
        )
        decoded = np.asarray(Image.open(buffer), dtype=np.float64) / 255.0
        out[i] = decoded.reshape(image.shape)
    return out


@dataclasses.dataclass(frozen=True)
class Corruption:
    """A corruption of the benchmark, as a row of the CIFAR-10-C table.

    Attributes:
        name: Name, as Hendrycks' functions and tfds' ImageNet-C spell it.
        held_out: One of the 4 held-out (validation) corruptions, not in the mCA / mCE.
        random: Whether it draws random numbers (a new seed gives new images).
        op: `(images, severity, rng) -> images`, float64, before clipping.
        min_size: Smallest image side it handles.
        channels: The channel counts it applies to.
        linear: Whether `op` is a normalized non-negative convolution, so
            that its largest possible change of a [0, 1] image is the
            weight its kernel puts off the centre pixel (`largest_change`).
    """

    name: str
    held_out: bool
    random: bool
    op: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    min_size: int = 1
    channels: tuple = (1, 3)
    linear: bool = False


# In the order of the reference's table: the 15 benchmark corruptions (noise,
# blur, weather, digital), then the 4 held-out ones.
CORRUPTIONS = {
    c.name: c
    for c in (
        Corruption("gaussian_noise", False, True, _gaussian_noise),
        Corruption("shot_noise", False, True, _shot_noise),
        Corruption("impulse_noise", False, True, _impulse_noise),
        Corruption("defocus_blur", False, False, _defocus_blur, linear=True),
        Corruption("glass_blur", False, True, _glass_blur, min_size=3),
        Corruption("motion_blur", False, True, _motion_blur_op),
        Corruption("zoom_blur", False, False, _zoom_blur),
        Corruption("snow", False, True, _snow),
        Corruption("frost", False, True, _frost, min_size=2),
        Corruption("fog", False, True, _fog, min_size=2),
        Corruption("brightness", False, False, _brightness),
        Corruption("contrast", False, False, _contrast),
        Corruption("elastic_transform", False, True, _elastic_transform, min_size=3),
        Corruption("pixelate", False, False, _pixelate, min_size=2),
        Corruption("jpeg_compression", False, False, _jpeg_compression),
        Corruption("speckle_noise", True, True, _speckle_noise),
        Corruption("gaussian_blur", True, False, _gaussian_blur, linear=True),
        Corruption("spatter", True, True, _spatter, min_size=2),
        Corruption("saturate", True, False, _saturate, channels=(3,)),
    )
}
BENCHMARK_CORRUPTIONS = tuple(name for name, c in CORRUPTIONS.items() if not c.held_out)
HELD_OUT_CORRUPTIONS = tuple(name for name, c in CORRUPTIONS.items() if c.held_out)


def not_applicable_reason(corruption: str, image_shape: Sequence[int]) -> Optional[str]:
    """Why `corruption` cannot run on images of `image_shape`, or None.

    The CIFAR-10-C table is written for 32x32 RGB images; every row of it
    runs at any size here except where a kernel or a warp needs a few pixels
    (`Corruption.min_size`), and `saturate`, an HSV saturation change, needs
    colour.

    Args:
        corruption: A name of `CORRUPTIONS`.
        image_shape: `(height, width, channels)`.

    Returns:
        A sentence naming what the corruption needs and what it received, or
        None when it applies.

    Example:

    ```python
    not_applicable_reason("saturate", (28, 28, 1))
    # "saturate needs images with 3 channels; received 1 channel"
    ```
    """
    spec = CORRUPTIONS[corruption]
    height, width, channels = image_shape
    if channels not in spec.channels:
        allowed = " or ".join(str(c) for c in spec.channels)
        return (f"{corruption} needs images with {allowed} channels; "
                f"received {channels} channel{'s' if channels != 1 else ''}")
    if min(height, width) < spec.min_size:
        return (f"{corruption} needs images of at least {spec.min_size}x{spec.min_size} pixels; "
                f"received {height}x{width}")
    if spec.linear:
        change = largest_change(corruption, image_shape)
        if change < NO_CHANGE:
            return (f"{corruption} changes no pixel of {height}x{width} images by more than "
                    f"{change:.2g} at any severity, below 1/255 (its kernel, scaled to the image, "
                    "stays within one pixel)")
    return None


def largest_change(corruption: str, image_shape: Sequence[int]) -> float:
    """The most a linear corruption can change a pixel of a [0, 1] image.

    For a normalized non-negative kernel `w`, `out - x` at a pixel is
    `sum_{i != centre} w_i (x_i - x_centre)`, at most `1 - w_centre` in
    absolute value. `w_centre` is read from the response to a unit impulse
    in the middle of an image of `image_shape`, for each severity.

    Args:
        corruption: A name of `CORRUPTIONS` with `linear=True`.
        image_shape: `(height, width, channels)`.

    Returns:
        The bound, maximized over the severities.

    Example:

    ```python
    largest_change("gaussian_blur", (8, 8, 1))   # 0.0013: below 1/255
    largest_change("gaussian_blur", (28, 28, 1))  # 0.79
    ```
    """
    spec = CORRUPTIONS[corruption]
    if not spec.linear:
        raise ValueError(f"{corruption} is not a linear corruption")
    height, width, channels = image_shape
    impulse = np.zeros((1, height, width, channels))
    impulse[0, height // 2, width // 2] = 1.0
    rng = np.random.default_rng(0)
    return max(1.0 - float(spec.op(impulse, severity, rng)[0, height // 2, width // 2, 0])
               for severity in SEVERITIES)


def check_severities(severities: Sequence[int]) -> None:
    """Checks severities: the rows 1-5 of the CIFAR-10-C / ImageNet-C tables.

    Args:
        severities: Integers in 1-5 (not bools, not floats).

    Raises:
        ValueError: for an empty selection or the first severity that is not
            an integer in 1-5, naming it.

    Example:

    ```python
    check_severities((1, 3, 5))  # passes
    check_severities((0,))  # ValueError: ... Received: severity=0
    ```
    """
    if not severities:
        raise ValueError(f"No severity selected. Expected severities among {SEVERITIES}")
    for severity in severities:
        if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or (
            severity not in SEVERITIES
        ):
            raise ValueError(f"Severities must be integers in 1-5. Received: severity={severity!r}")


def check_corruptions(
    corruptions: Sequence[str],
    severities: Sequence[int],
    image_shape: Optional[Sequence[int]] = None,
) -> None:
    """Checks corruption names, severities and (optionally) the image shape.

    Names and severities are those of the CIFAR-10-C table (`CORRUPTIONS`,
    severities 1-5); a named corruption that cannot run on `image_shape`
    (`not_applicable_reason`) is an error.

    Args:
        corruptions: Names of `CORRUPTIONS`.
        severities: Integers in 1-5.
        image_shape: `(height, width, channels)` of the images, if known.

    Raises:
        ValueError: naming the first unknown corruption, severity outside
            1-5, or a corruption that does not apply to `image_shape`, and
            what is allowed.

    Example:

    ```python
    check_corruptions(["fog", "contrast"], (1, 5), image_shape=(8, 8, 1))
    ```
    """
    if not corruptions:
        raise ValueError(f"No corruption selected. Expected names among {tuple(CORRUPTIONS)}")
    for name in corruptions:
        if name not in CORRUPTIONS:
            raise ValueError(
                f"Unknown corruption {name!r}. Expected one of {', '.join(CORRUPTIONS)}"
            )
    check_severities(severities)
    if image_shape is not None:
        if len(image_shape) != 3 or image_shape[-1] not in (1, 3):
            raise ValueError(
                f"Corruptions need images of shape (height, width, 1 or 3 channels). "
                f"Received shape={tuple(image_shape)}"
            )
        for name in corruptions:
            reason = not_applicable_reason(name, image_shape)
            if reason:
                raise ValueError(f"Corruption {name!r} does not apply: {reason}")


def corrupt(
    images: np.ndarray, corruption: str, severity: int, seed: int = 0, part: int = 0
) -> np.ndarray:
    """Applies one corruption at one severity to a batch of images.

    The parameters are the CIFAR-10-C table's (`make_cifar_c.py` of
    `hendrycks/robustness`; each operation's docstring quotes its row),
    adapted to the image size as the module docstring says.

    Deterministic: the random numbers come from a generator seeded with
    `(seed, corruption, severity)` and drawn in chunks of `CHUNK` images, so
    the same images, corruption, severity and seed give bit-identical output;
    another seed gives other images for the random corruptions. A test set
    corrupted chunk by chunk numbers its chunks with `part`: each part > 0
    draws its own random numbers (part 0 draws those of a single call).

    Args:
        images: Floating-point images in [0, 1], `(batch, height, width,
            channels)` with 1 or 3 channels.
        corruption: A name of `CORRUPTIONS`.
        severity: 1-5.
        seed: Non-negative integer seed.
        part: Index (>= 0) of this chunk of a larger set.

    Returns:
        The corrupted images, clipped to [0, 1], of the input's shape and dtype.

    Raises:
        ValueError: for an unknown corruption, a severity outside 1-5, images
            it does not apply to, or images that are not floats in [0, 1].

    Example:

    ```python
    x_fog = corrupt(x_test, "fog", severity=3, seed=0)
    ```
    """
    array = np.asarray(images)
    if array.dtype.kind != "f":
        raise ValueError(f"`images` must be floating point in [0, 1]. Received dtype={array.dtype}")
    validate_images(array)
    check_corruptions([corruption], [severity], array.shape[1:])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0. Received: seed={seed!r}")
    if isinstance(part, bool) or not isinstance(part, (int, np.integer)) or part < 0:
        raise ValueError(f"`part` must be an integer >= 0. Received: part={part!r}")
    key = [int(seed), zlib.crc32(corruption.encode()), int(severity)] + ([int(part)] if part else [])
    rng = np.random.default_rng(key)
    op = CORRUPTIONS[corruption].op
    out = np.empty_like(array)
    for lo in range(0, len(array), CHUNK):
        chunk = array[lo : lo + CHUNK].astype(np.float64)
        out[lo : lo + CHUNK] = np.clip(op(chunk, int(severity), rng), 0.0, 1.0)
    return out
