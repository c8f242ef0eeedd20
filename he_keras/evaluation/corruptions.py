"""Accuracy under common corruptions: mCA and mCE, from two sources, one report.

Hendrycks & Dietterich (ICLR 2019) measure a classifier on the test set
corrupted by 15 benchmark corruptions (and 4 held-out ones) at severities
1-5. The corrupted images come from one of two sources, with the same
report either way:

- `generated` (`corruption_benchmark`, or `corruption_benchmark_chunks` for a
  test set read in chunks): any image dataset, offline. The test
  images are corrupted here by `he_keras.evaluation.corruption_ops`
  (CIFAR-10-C's parameter table, adapted to the image size), seeded, so
  the same seed gives the same images.
- `tfds` (`corruption_accuracy`): the released CIFAR-10-C / ImageNet-C as
  tfds configs `cifar10_corrupted/<corruption>_<severity>` and
  `imagenet2012_corrupted/<corruption>_<severity>`, for users who have them.

The report (a JSON-ready dict) holds the accuracy per corruption and
severity, per corruption (mean over severities), the mean corruption
accuracy mCA (HE paper, Table 5: the mean over the benchmark corruptions and
severities; the held-out ones get their own mean), and, given a reference
model, both of Hendrycks & Dietterich's corruption errors (their ImageNet-C
results table: CE per corruption, mCE, relative mCE; `corruption_errors`).
`he_keras.evaluation.corruption_report.write_corruption_report` writes it as JSON,
Markdown and a heatmap PNG.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from he_keras.evaluation import corruption_ops
from he_keras.evaluation.corruption_selection import CORRUPTED_VERSIONS, SEVERITIES, select_corruptions
from he_keras.evaluation.ensemble import predict_logits
from he_keras.validation import validate_images, validate_labels


def _accuracy_grid(
    models: dict,
    corruptions: Sequence[str],
    severities: Sequence[int],
    batches: Callable[[str, int], Iterable[tuple[np.ndarray, np.ndarray]]],
    batch_size: int,
    verbose: int,
) -> tuple[dict, list, dict]:
    """Accuracy of each model on each corruption and severity.

    Returns:
        `({model key: {corruption: {str(severity): accuracy}}}, sorted point
        counts, {corruption: per-point count of severities "model" got right}`;
        the last only if every configuration saw the same number of points).
    """
    grid = {key: {c: {} for c in corruptions} for key in models}
    counts = set()
    point_hits = {c: 0 for c in corruptions}
    progress = None
    if verbose:
        print(f"Corruptions: {len(corruptions)} x {len(severities)} severities")
        progress = keras.utils.Progbar(
            len(corruptions) * len(severities), stateful_metrics=["mean_accuracy"],
            unit_name="config",
        )
    for corruption in corruptions:
        for severity in severities:
            hits = dict.fromkeys(models, 0)
            total = 0
            correct = []
            for x, y in batches(corruption, severity):
                for key, model in models.items():
                    right = predict_logits(model, x, batch_size).argmax(1) == y
                    hits[key] += int(right.sum())
                    if key == "model":
                        correct.append(right)
                total += len(y)
            counts.add(total)
            if len(counts) == 1:
                point_hits[corruption] = point_hits[corruption] + np.concatenate(correct).astype(np.int64)
            for key in models:
                grid[key][corruption][str(severity)] = hits[key] / total
            if progress is not None:
                done = [a for by_severity in grid["model"].values() for a in by_severity.values()]
                progress.add(1, values=[("mean_accuracy", float(np.mean(done)))])
    return grid, sorted(counts), (point_hits if len(counts) == 1 else {})


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _accuracy_summary(grid: dict, held_out: Sequence[str]) -> dict:
    """`per_corruption`, `mCA` (benchmark corruptions) and `held_out_mCA`."""
    per_corruption = {c: float(np.mean(list(v.values()))) for c, v in grid.items()}
    return {
        "accuracy": grid,
        "per_corruption": per_corruption,
        "mCA": _mean(v for c, v in per_corruption.items() if c not in held_out),
        "held_out_mCA": _mean(v for c, v in per_corruption.items() if c in held_out),
    }


def corruption_errors(
    accuracy: dict,
    reference_accuracy: dict,
    held_out: Sequence[str] = (),
    clean_accuracy: Optional[float] = None,
    reference_clean_accuracy: Optional[float] = None,
) -> dict:
    """Hendrycks' corruption errors of a model relative to a reference model.

    As in Hendrycks & Dietterich's ImageNet-C results table (AlexNet as the
    reference there): CE_c = sum_s E_{s,c}(f) / sum_s E_{s,c}(ref) and, given
    both clean accuracies, the relative CE_c = sum_s (E_{s,c}(f) -
    E_clean(f)) / sum_s (E_{s,c}(ref) - E_clean(ref)), with E = 1 -
    accuracy. A ratio whose denominator is not positive (the reference makes
    no error, or no more error than on clean data) is undefined: None, left
    out of the means. mCE and relative mCE average the benchmark corruptions.

    Args:
        accuracy: `{corruption: {severity: accuracy}}` of the model.
        reference_accuracy: The same for the reference model.
        held_out: Corruptions left out of the means.
        clean_accuracy: Clean accuracy of the model.
        reference_clean_accuracy: Clean accuracy of the reference model.

    Returns:
        `{"CE": {c: ratio}, "mCE", "relative_CE", "relative_mCE"}` (ratios,
        1.0 = as the reference; the relative ones None without clean
        accuracies).

    Example:

    ```python
    errors = corruption_errors(result["accuracy"], result["reference"]["accuracy"])
    print(errors["mCE"])
    ```
    """
    ce, relative = {}, {}
    for corruption, by_severity in accuracy.items():
        ref = reference_accuracy[corruption]
        err = sum(1 - by_severity[s] for s in by_severity)
        ref_err = sum(1 - ref[s] for s in by_severity)
        ce[corruption] = err / ref_err if ref_err > 0 else None
        relative[corruption] = None
        if clean_accuracy is not None and reference_clean_accuracy is not None:
            # Term by term, so a severity the model shrugs off adds an exact 0.
            gap = sum(clean_accuracy - by_severity[s] for s in by_severity)
            ref_gap = sum(reference_clean_accuracy - ref[s] for s in by_severity)
            relative[corruption] = gap / ref_gap if ref_gap > 0 else None
    benchmark = [c for c in accuracy if c not in held_out]
    return {
        "CE": ce,
        "mCE": _mean(ce[c] for c in benchmark),
        "relative_CE": relative,
        "relative_mCE": _mean(relative[c] for c in benchmark),
    }


def _measure(
    model: Callable,
    reference_model: Optional[Callable],
    names: dict,
    corruptions: Sequence[str],
    severities: Sequence[int],
    batches: Callable[[str, int], Iterable[tuple[np.ndarray, np.ndarray]]],
    *,
    clean: Optional[Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]],
    held_out: Sequence[str],
    batch_size: int,
    verbose: int,
    started: float,
    settings: dict,
    per_point: bool = False,
) -> dict:
    """Runs the grid of both sources and assembles their common report.

    Args:
        names: `{"model": name, "reference": name}` for the report.
        clean: Called for checked clean `(images, labels)` chunks, or None.
        held_out: The source's held-out corruptions.
        started: `time.perf_counter()` at the public call.
        settings: The source's settings, first in the report.
        per_point: Whether the report gets `point_correct` and `point_configs`.
    """
    models = {"model": model}
    if reference_model is not None:
        models["reference"] = reference_model
    clean_accuracy = {}
    if clean is not None:
        hits = dict.fromkeys(models, 0)
        total = 0
        for x, y in clean():
            for key, m in models.items():
                hits[key] += int(np.sum(predict_logits(m, x, batch_size).argmax(1) == y))
            total += len(y)
        clean_accuracy = {key: value / total for key, value in hits.items()}
    benchmark = [c for c in corruptions if c not in held_out]
    if per_point and not benchmark:
        raise ValueError("Per-point results need benchmark corruptions. "
                         f"Received only held-out ones: corruptions={list(corruptions)}")
    grid, counts, point_hits = _accuracy_grid(models, corruptions, severities, batches, batch_size, verbose)
    out = {**settings, "model": names["model"], "n_per_config": counts,
           "held_out": [c for c in grid["model"] if c in held_out]}
    if "model" in clean_accuracy:
        out["clean_accuracy"] = clean_accuracy["model"]
    out.update(_accuracy_summary(grid["model"], held_out))
    if per_point:
        if not point_hits:
            raise ValueError("Per-point results need every configuration to give the same points. "
                             f"Received: points per configuration {counts}")
        out["point_correct"] = [int(v) for v in sum(point_hits[c] for c in benchmark)]
        out["point_configs"] = len(benchmark) * len(severities)
    if "reference" in grid:
        reference = {"model": names["reference"]}
        if "reference" in clean_accuracy:
            reference["clean_accuracy"] = clean_accuracy["reference"]
        reference.update(_accuracy_summary(grid["reference"], held_out))
        out["reference"] = reference
        out.update(corruption_errors(
            grid["model"], grid["reference"], held_out,
            clean_accuracy.get("model"), clean_accuracy.get("reference"),
        ))
    out["seconds"] = time.perf_counter() - started
    return out


def _one_chunk(x: np.ndarray, y: np.ndarray) -> Callable[[], list]:
    """The chunk factory of a test set held in memory."""
    return lambda: [(x, y)]


def _checked_chunks(
    model: Callable, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """`chunks` with every chunk's images and labels checked when read (the
    number of classes from `model`); an empty set is an error."""

    def checked() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Counted by hand: `enumerate` would hold the previous chunk while
        # the next one is read.
        index = 0
        for x, y in chunks():
            x = validate_images(x, name="images" if index == 0 else f"images of chunk {index + 1}")
            index += 1
            yield x, validate_labels(y, predict_logits(model, x[:1], 1).shape[1], len(x))
        if index == 0:
            raise ValueError("There are no clean images to corrupt: the test set is empty")

    return checked


def corruption_benchmark(
    model: Callable,
    x: np.ndarray,
    y: np.ndarray,
    corruptions: Optional[Sequence[str]] = None,
    severities: Sequence[int] = SEVERITIES,
    **settings: Any,
) -> dict:
    """Accuracy of `model` on `x` corrupted here, per corruption and severity.

    Every image of `x` is corrupted by each corruption at each severity
    (`corruption_ops.corrupt`: the CIFAR-10-C parameter table adapted to
    the image size, seeded from `seed`), offline, for any image size with 1
    or 3 channels; a reference model, if given, sees the same corrupted
    images. mCA as in the HE paper's Table 5; CE, mCE and relative mCE as in
    Hendrycks & Dietterich's ImageNet-C results table (`corruption_errors`).

    Args:
        model: Callable returning logits for [0, 1] images.
        x: Clean test images in [0, 1], `(n, height, width, channels)`.
        y: Integer labels `(n,)`.
        corruptions: Names of `corruption_ops.CORRUPTIONS`, or None for all
            that apply to the images (the rest are listed in
            `not_applicable`).
        severities: Severities (1-5) to evaluate.
        **settings: The other keyword arguments of
            `corruption_benchmark_chunks` (`seed`, `batch_size`,
            `reference_model`, `dataset`, `model_name`, `reference_name`,
            `verbose`, `per_point`).

    Returns:
        The JSON-ready report: `source`, `dataset`, `seed`, `severities`,
        `not_applicable`, `model`, `n_per_config`, `held_out` (the held-out
        corruptions evaluated), `clean_accuracy`,
        `accuracy[corruption][severity]`, `per_corruption`, `mCA` (benchmark
        corruptions), `held_out_mCA`, `seconds`; with a reference model also
        `reference` (its accuracies), `CE`, `mCE`, `relative_CE`,
        `relative_mCE`; with `per_point`, `point_correct` and
        `point_configs`.

    Raises:
        ValueError: for images or labels that are not valid, unknown
            corruptions, severities outside 1-5, a named corruption that
            does not apply to the images, or `per_point` with held-out
            corruptions only.

    Example:

    ```python
    result = corruption_benchmark(model, x_test, y_test, seed=0)
    print(result["mCA"], result["per_corruption"]["fog"])
    ```
    """
    return corruption_benchmark_chunks(model, _one_chunk(x, y), corruptions, severities, **settings)


def corruption_benchmark_chunks(
    model: Callable,
    chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    corruptions: Optional[Sequence[str]] = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 128,
    reference_model: Optional[Callable] = None,
    dataset: str = "",
    model_name: str = "model",
    reference_name: str = "reference",
    verbose: int = 0,
    per_point: bool = False,
) -> dict:
    """`corruption_benchmark` over a test set read in chunks, one in memory at a time.

    The set is read once for the clean accuracies and once per corruption
    and severity; chunk `k` is corrupted with `corrupt(..., part=k)`, so one
    chunk gives the images of `corruption_benchmark` and every chunk draws
    its own random numbers.

    Args:
        model: Callable returning logits for [0, 1] images.
        chunks: Called with no argument, returns an iterable of
            `(images, labels)` chunks, the same ones in the same order at
            every call (e.g. `lambda: he_keras.data.test_batches(data, n, 1000)`).
        corruptions: Names of `corruption_ops.CORRUPTIONS`, or None for all
            that apply to the images (the rest are listed in
            `not_applicable`).
        severities: Severities (1-5) to evaluate.
        seed: Seed of the corruptions: the same seed, the same images.
        batch_size: Points per forward pass.
        reference_model: Model of the CE / mCE denominators (AlexNet in
            Hendrycks' ImageNet-C), or None.
        dataset: Name of the dataset, for the report.
        model_name: Name of the model, for the report.
        reference_name: Name of the reference model, for the report.
        verbose: 1 shows a progress bar over the (corruption, severity) pairs.
        per_point: Also report, for each point (in the chunks' order), how
            many benchmark (corruption, severity) configurations `model`
            classifies it right in (`point_correct`, out of
            `point_configs`; its mean over the points, divided by
            `point_configs`, is mCA): the per-point outcome that pairs two
            models on the same corrupted images.

    Returns:
        The report of `corruption_benchmark`.

    Raises:
        ValueError: as `corruption_benchmark`, naming the chunk of invalid
            images, and for an empty test set.

    Example:

    ```python
    data = he_keras.data.load_dataset("mnist5k")
    result = corruption_benchmark_chunks(
        model, lambda: he_keras.data.test_batches(data, 1000, 250), seed=0
    )
    ```
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    clean = _checked_chunks(model, chunks)
    first, _ = next(iter(clean()))
    names, not_applicable = select_corruptions(
        "generated", dataset, corruptions, severities, first.shape[1:]
    )

    def batches(corruption: str, severity: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        part = 0
        for x, y in clean():
            yield corruption_ops.corrupt(x, corruption, severity, seed=seed, part=part), y
            part += 1

    return _measure(
        model, reference_model, {"model": model_name, "reference": reference_name},
        names, severities, batches, clean=clean, held_out=corruption_ops.HELD_OUT_CORRUPTIONS,
        batch_size=batch_size, verbose=verbose, started=started,
        settings=dict(source="generated", dataset=dataset, seed=seed,
                      severities=list(severities), not_applicable=not_applicable),
        per_point=per_point,
    )


def _load(
    name: str, split: str, n_examples: int, data_dir: Optional[str], batch_size: int
) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    data = tfds.load(name, split=split, as_supervised=True, data_dir=data_dir)
    return data.take(n_examples).map(
        lambda image, label: (tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32))
    ).batch(batch_size)


def corruption_accuracy(
    model: Callable,
    dataset: str,
    n_examples: int,
    corruptions: Optional[Sequence[str]] = None,
    severities: Sequence[int] = SEVERITIES,
    data_dir: Optional[str] = None,
    batch_size: int = 128,
    reference_model: Optional[Callable] = None,
    clean: Union[
        None, tuple[np.ndarray, np.ndarray], Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
    ] = None,
    model_name: str = "model",
    reference_name: str = "reference",
    verbose: int = 0,
) -> dict:
    """Accuracy of `model` on the tfds CIFAR-10-C / ImageNet-C, per corruption and severity.

    mCA as in the HE paper's Table 5 (the default corruptions are its 15
    benchmark ones); CE, mCE and relative mCE as in Hendrycks & Dietterich's
    ImageNet-C results table (`corruption_errors`).

    Args:
        model: Callable returning logits for [0, 1] images.
        dataset: The clean dataset's name (`cifar10` or `imagenet2012`).
        n_examples: Test examples per corruption and severity.
        corruptions: Corruption names as the tfds builder spells them
            (default: the 15 benchmark ones; the 4 held-out ones may be named).
        severities: Severities to evaluate.
        data_dir: tfds data directory.
        batch_size: Batch size.
        reference_model: Model of the CE / mCE denominators, or None.
        clean: Clean test `(images, labels)` for the clean accuracies (and so
            the relative mCE), or a callable returning `(images, labels)`
            chunks (read one at a time), or None.
        model_name: Name of the model, for the report.
        reference_name: Name of the reference model, for the report.
        verbose: 1 shows a progress bar over the (corruption, severity) pairs.

    Returns:
        The JSON-ready report of `corruption_benchmark` (without `seed`;
        `dataset` is the tfds name, `source` is `"tfds"`; `clean_accuracy`
        only given `clean`).

    Raises:
        ValueError: for a dataset without a tfds corrupted version, unknown
            corruptions, severities outside 1-5, `n_examples < 1` or clean
            data that is not valid.

    Example:

    ```python
    result = corruption_accuracy(model, "cifar10", n_examples=1000)
    print(result["mCA"], result["per_corruption"]["fog"])
    ```
    """
    started = time.perf_counter()
    names, _ = select_corruptions("tfds", dataset, corruptions, severities)
    name, split, benchmark, held_out = CORRUPTED_VERSIONS[dataset]
    if corruptions is None:
        names = benchmark
    if n_examples < 1:
        raise ValueError(f"`n_examples` must be >= 1. Received: n_examples={n_examples}")
    if isinstance(clean, tuple):
        clean = _one_chunk(*clean)
    if clean is not None:
        clean = _checked_chunks(model, clean)

    def batches(corruption: str, severity: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for x, y in _load(f"{name}/{corruption}_{severity}", split, n_examples, data_dir, batch_size):
            yield x.numpy(), y.numpy()

    return _measure(
        model, reference_model, {"model": model_name, "reference": reference_name},
        names, severities, batches, clean=clean, held_out=held_out, batch_size=batch_size,
        verbose=verbose, started=started,
        settings=dict(source="tfds", dataset=name, severities=list(severities), not_applicable={}),
    )
