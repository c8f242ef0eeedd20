"""Which corruptions and severities the benchmark runs, checked before any data loads.

Two sources name the corruptions: `generated` (the CIFAR-10-C table of
`he_keras.evaluation.corruption_ops`, any dataset, offline) and `tfds` (the
released CIFAR-10-C / ImageNet-C, `cifar10_corrupted` and
`imagenet2012_corrupted`). `corruption_settings` checks a selection written
as text (a command line); `select_corruptions` checks it against a source
and, for `generated`, the images' shape.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

from he_keras.evaluation import corruption_ops

SEVERITIES = corruption_ops.SEVERITIES
SOURCES = ("generated", "tfds")

# The 13 benchmark corruptions both tfds builders spell alike; each adds
# its glass blur and elastic spelling.
_COMMON = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness",
    "contrast", "pixelate", "jpeg_compression",
)
_TFDS_HELD_OUT = ("gaussian_blur", "saturate", "spatter", "speckle_noise")
# clean dataset -> (tfds name, split, benchmark corruptions, held-out corruptions)
CORRUPTED_VERSIONS = {
    "cifar10": ("cifar10_corrupted", "test", _COMMON + ("frosted_glass_blur", "elastic"),
                _TFDS_HELD_OUT),
    "imagenet2012": ("imagenet2012_corrupted", "validation",
                     _COMMON + ("glass_blur", "elastic_transform"), _TFDS_HELD_OUT),
}


def corrupted_version(dataset: str) -> Optional[str]:
    """The tfds name of the released corrupted version of `dataset`, or None.

    Hendrycks & Dietterich released CIFAR-10-C and ImageNet-C; tfds serves
    them as `cifar10_corrupted` and `imagenet2012_corrupted`.

    Args:
        dataset: The clean dataset's name.

    Returns:
        `"cifar10_corrupted"`, `"imagenet2012_corrupted"` or None.

    Example:

    ```python
    corrupted_version("cifar10")  # "cifar10_corrupted"
    ```
    """
    entry = CORRUPTED_VERSIONS.get(dataset)
    return None if entry is None else entry[0]


def select_corruptions(
    source: str,
    dataset: str,
    corruptions: Optional[Sequence[str]] = None,
    severities: Sequence[int] = SEVERITIES,
    image_shape: Optional[Sequence[int]] = None,
) -> tuple[tuple, dict]:
    """Checks a selection of corruptions and severities against a source.

    The names are those of the CIFAR-10-C table (`generated`) or of the tfds
    builder (`tfds`), the severities its rows 1-5.

    Args:
        source: `"generated"` or `"tfds"`.
        dataset: The clean dataset's name (for `"tfds"`: `cifar10` or
            `imagenet2012`).
        corruptions: Names, or None for every corruption that applies
            (the 15 benchmark and the 4 held-out ones; `generated`: those
            that apply to `image_shape`).
        severities: Integers in 1-5.
        image_shape: `(height, width, channels)` of the images (`generated`),
            if known.

    Returns:
        `(names, not_applicable)`: the corruptions to run, and for
        `corruptions=None` the ones left out with the reason.

    Raises:
        ValueError: naming an unknown source, dataset without a tfds
            corrupted version, unknown corruption, severity outside 1-5 or
            a named corruption that does not apply to `image_shape`, with
            what is allowed.

    Example:

    ```python
    names, left_out = select_corruptions("generated", "digits", image_shape=(8, 8, 1))
    # left_out: saturate ("needs images with 3 channels; ..."), defocus_blur and
    # gaussian_blur ("changes no pixel of 8x8 images by more than ...")
    ```
    """
    if source not in SOURCES:
        raise ValueError(f"`source` must be one of {SOURCES}. Received: source={source!r}")
    if source == "generated":
        if corruptions is not None:
            corruption_ops.check_corruptions(tuple(corruptions), severities, image_shape)
            return tuple(corruptions), {}
        corruption_ops.check_severities(severities)
        if image_shape is None:
            return tuple(corruption_ops.CORRUPTIONS), {}
        reasons = {
            name: corruption_ops.not_applicable_reason(name, image_shape)
            for name in corruption_ops.CORRUPTIONS
        }
        names = tuple(name for name, why in reasons.items() if why is None)
        if not names:
            raise ValueError(
                f"No corruption applies to images of shape {tuple(image_shape)}: "
                f"{reasons[corruption_ops.BENCHMARK_CORRUPTIONS[0]]}"
            )
        return names, {name: why for name, why in reasons.items() if why}
    if dataset not in CORRUPTED_VERSIONS:
        raise ValueError(
            f"No tfds corrupted version of this dataset. Expected one of "
            f"{sorted(CORRUPTED_VERSIONS)}. Received: dataset={dataset!r} "
            f"(source='generated' corrupts any dataset)"
        )
    _, _, benchmark, held_out = CORRUPTED_VERSIONS[dataset]
    names = tuple(corruptions or benchmark + held_out)
    unknown = [c for c in names if c not in benchmark + held_out]
    if unknown:
        raise ValueError(
            f"Unknown corruption {unknown[0]!r} for {corrupted_version(dataset)}. "
            f"Expected one of {', '.join(benchmark + held_out)}"
        )
    corruption_ops.check_severities(severities)
    return names, {}


@dataclasses.dataclass(frozen=True)
class CorruptionSettings:
    """A checked choice of what the corruption benchmark runs (`corruption_settings`).

    Attributes:
        source: `"generated"` or `"tfds"`.
        corruptions: Names as the source spells them, or None for every
            corruption that applies.
        severities: Distinct severities in 1-5, in the order given.
    """

    source: str
    corruptions: Optional[tuple[str, ...]]
    severities: tuple[int, ...]


def corruption_settings(
    corruptions: Union[str, Sequence[str]] = "all",
    severities: Union[str, Sequence[Union[int, str]]] = SEVERITIES,
    source: str = "generated",
    dataset: str = "",
) -> CorruptionSettings:
    """Checks a corruption selection written as text, e.g. on a command line.

    Checked against the CIFAR-10-C table (`generated`: its 19 names and
    rows 1-5) or the tfds builder's names (`tfds`), before any data is
    loaded; whether a corruption applies to the images' shape is decided
    once they are known (`select_corruptions`).

    Args:
        corruptions: `"all"`, a comma list (`"fog,contrast"`) or a sequence
            of names. Repeats are dropped.
        severities: A comma list (`"1,5"`) or a sequence of integers in 1-5.
            Repeats are dropped.
        source: `"generated"` or `"tfds"`.
        dataset: The clean dataset's name (for `"tfds"`: `cifar10` or
            `imagenet2012`).

    Returns:
        The `CorruptionSettings`.

    Raises:
        ValueError: naming the value (`corruptions`, `severities`, `source`
            or `dataset`) and what is allowed.

    Example:

    ```python
    settings = corruption_settings("fog,contrast", "1,5")
    result = corruption_benchmark(model, x, y, settings.corruptions, settings.severities)
    ```
    """
    items = severities.split(",") if isinstance(severities, str) else list(severities)
    given = severities if isinstance(severities, str) else ",".join(str(s) for s in items)
    try:
        parsed = tuple(dict.fromkeys(
            int(s.strip()) if isinstance(s, str) else s for s in items
        ))
        corruption_ops.check_severities(parsed)
    except ValueError as err:
        raise ValueError(
            f"`severities` must be a comma list of integers in 1-5. Received: severities={given!r}"
        ) from err
    if isinstance(corruptions, str):
        text = corruptions.strip()
        names = None if text == "all" else tuple(
            dict.fromkeys(n.strip() for n in text.split(",") if n.strip())
        )
    else:
        text = ",".join(corruptions)
        names = tuple(dict.fromkeys(corruptions))
    if names == ():
        raise ValueError(
            f"`corruptions` must be 'all' or a comma list of corruption names. "
            f"Received: corruptions={text!r}"
        )
    select_corruptions(source, dataset, names, parsed)
    return CorruptionSettings(source, names, parsed)
