"""Writes the common-corruption report: `corruptions.json`, `corruptions.md` and a heatmap.

The table follows Hendrycks & Dietterich's ImageNet-C results table (one
row per corruption, its accuracy per severity, CE and relative CE, then mCA
and mCE); the result dict is `he_keras.evaluation.corruptions`'. Files are
written atomically (`report_io`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

# pyplot with the headless backend chosen once, in report_io.
from he_keras.evaluation.report_io import markdown_table, pct, plt, to_json, write_files


CORRUPTION_REPORT_FILES = ("corruptions.json", "corruptions.md", "corruption_heatmap.png")


def _ratio(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _corruption_rows(result: dict) -> tuple[list, list]:
    """Header and rows: accuracy (%) per severity, mean, and CE columns."""
    severities = [str(s) for s in result["severities"]]
    header = ["corruption"] + [f"sev {s}" for s in severities] + ["mean"]
    errors = "CE" in result
    if errors:
        header += ["CE", "rel. CE"]
    rows = []
    for corruption, by_severity in result["accuracy"].items():
        row = [corruption] + [pct(by_severity[s]) for s in severities]
        row.append(pct(result["per_corruption"][corruption]))
        if errors:
            row += [_ratio(result["CE"][corruption]), _ratio(result["relative_CE"][corruption])]
        rows.append(row)
    return header, rows


def _corruption_summary(result: dict) -> list:
    """The summary lines: clean accuracy, mCA, held-out mCA, mCE, what was left out."""
    n_bench = len(result["accuracy"]) - len(result["held_out"])
    lines = []
    if "clean_accuracy" in result:
        lines.append(f"clean accuracy: {pct(result['clean_accuracy'])}")
    lines.append(f"mCA ({n_bench} benchmark corruptions): {pct(result['mCA'])}")
    if result["held_out"]:
        lines.append(
            f"held-out mCA ({len(result['held_out'])} held-out corruptions): "
            f"{pct(result['held_out_mCA'])}"
        )
    if "reference" in result:
        lines.append(
            f"mCE vs {result['reference']['model']} (reference mCA "
            f"{pct(result['reference']['mCA'])}): {_ratio(result['mCE'])} %, "
            f"relative mCE: {_ratio(result['relative_mCE'])} %"
        )
    for name, reason in result["not_applicable"].items():
        lines.append(f"not applicable: {name} ({reason})")
    return lines


def corruption_table(result: dict) -> str:
    """The plain-text table of a corruption report, then its summary lines.

    The layout of Hendrycks & Dietterich's ImageNet-C results table: one row
    per corruption (here its accuracy per severity too), then the means.

    Args:
        result: A report of `corruption_benchmark` or `corruption_accuracy`.

    Returns:
        One row per corruption (accuracy % per severity and its mean, CE and
        relative CE in % with a reference model), then the clean accuracy,
        mCA, held-out mCA, mCE and the corruptions that did not apply.

    Example:

    ```python
    print(corruption_table(corruption_benchmark(model, x, y)))
    ```
    """
    header, rows = _corruption_rows(result)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    ]
    return "\n".join(lines + _corruption_summary(result))


def corruption_markdown(result: dict) -> str:
    """Renders a corruption report as Markdown: settings, table, summary, heatmap.

    The table has the layout of `corruption_table` (Hendrycks & Dietterich's
    ImageNet-C results table, with the accuracy per severity).

    Args:
        result: A report of `corruption_benchmark` or `corruption_accuracy`.

    Returns:
        The Markdown text of `corruptions.md`.

    Example:

    ```python
    text = corruption_markdown(corruption_benchmark(model, x, y))
    ```
    """
    settings = [f"source `{result['source']}`", f"dataset `{result['dataset']}`",
                f"n = {', '.join(str(n) for n in result['n_per_config'])} per corruption and severity"]
    if "seed" in result:
        settings.append(f"seed {result['seed']}")
    settings.append(f"{result['seconds']:.1f} s")
    return "\n".join([
        f"# Common corruptions: `{result['model']}`",
        "",
        ", ".join(settings) + ".",
        "",
        "Accuracy (%) per corruption and severity; CE and relative CE in % of the reference's.",
        "",
        markdown_table(*_corruption_rows(result)),
        "",
        *[f"- {line}" for line in _corruption_summary(result)],
        "",
        f"![accuracy per corruption and severity]({CORRUPTION_REPORT_FILES[2]})",
        "",
    ])


def corruption_heatmap(result: dict) -> plt.Figure:
    """Heatmap of the accuracy (%), corruptions x severities plus their mean.

    The cells of `corruption_table`'s accuracy columns, coloured on a fixed
    0-100 % scale.

    Args:
        result: A report of `corruption_benchmark` or `corruption_accuracy`.

    Returns:
        The Matplotlib figure (the caller closes it).

    Example:

    ```python
    corruption_heatmap(result).savefig("corruption_heatmap.png")
    ```
    """
    severities = [str(s) for s in result["severities"]]
    names = list(result["accuracy"])
    values = np.array([
        [result["accuracy"][c][s] for s in severities] + [result["per_corruption"][c]] for c in names
    ]) * 100
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * values.shape[1], 1.0 + 0.32 * len(names)))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                color="black" if value > 60 else "white")
    ax.set_xticks(range(values.shape[1]), [*severities, "mean"])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("severity")
    ax.set_title(f"{result['model']} on {result['dataset']}: mCA {pct(result['mCA'])} %", fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    return fig


def write_corruption_report(result: dict, output_dir: str) -> list:
    """Writes `corruptions.json`, `corruptions.md` and `corruption_heatmap.png`.

    Each file is written atomically; the Markdown table follows
    `corruption_table` (Hendrycks & Dietterich's ImageNet-C results table).

    Args:
        result: A report of `corruption_benchmark` or `corruption_accuracy`.
        output_dir: Directory (created if missing; must not be a file).

    Returns:
        The paths written.

    Example:

    ```python
    write_corruption_report(corruption_benchmark(model, x, y), "runs/eval")
    ```
    """
    json_name, md_name, heatmap_name = CORRUPTION_REPORT_FILES
    return write_files(
        output_dir, {json_name: to_json(result), md_name: corruption_markdown(result)},
        lambda: {heatmap_name: corruption_heatmap(result)},
    )
