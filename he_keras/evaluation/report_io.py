"""Writing report files: atomic text and PNG files, Markdown tables, percentages.

Every file is written atomically (a temporary file in the output directory,
then `os.replace`), so a crash never leaves a half-written report behind.
Figures are drawn with matplotlib's headless backend, chosen here before
pyplot loads; the report modules take `plt` from this module.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from he_keras.files import write_atomic  # noqa: E402


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path, write, suffix=os.path.splitext(path)[1])


def save_figure(fig: plt.Figure, path: str) -> None:
    """Saves `fig` as a PNG at `path` atomically, then closes it."""
    try:
        write_atomic(
            path,
            lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"),
            suffix=".png",
        )
    finally:
        plt.close(fig)


def pct(value: Optional[float]) -> str:
    """A fraction as a percentage with two decimals ("—" for None)."""
    return "—" if value is None else f"{100 * value:.2f}"


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table from a header and rows of cells."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_files(output_dir: str, texts: dict, figures: Callable[[], dict]) -> list:
    """Writes text files, then the figures `figures()` makes, into `output_dir`.

    Args:
        output_dir: Directory (created if missing; must not be a file).
        texts: `{file name: text}`.
        figures: Returns `{file name: figure}`; called once the directory is checked.

    Returns:
        The paths written, in the order given.
    """
    if os.path.isfile(output_dir):
        raise ValueError(f"`output_dir` is a file, not a directory: {output_dir!r}")
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for name, text in texts.items():
        paths.append(os.path.join(output_dir, name))
        write_text(paths[-1], text)
    for name, fig in figures().items():
        paths.append(os.path.join(output_dir, name))
        save_figure(fig, paths[-1])
    return paths


def to_json(report: dict) -> str:
    """A report as indented JSON (NaN and inf refused)."""
    return json.dumps(report, indent=2, allow_nan=False) + "\n"
