"""Atomic file writes (a kill never leaves a truncated file behind) and JSON reads
that name the file in every error."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable

import numpy as np


def write_atomic(path: str, writer: Callable[[str], None], suffix: str = "") -> None:
    """Writes a file through `writer(tmp_path)` then renames it into place.

    A kill during the write leaves the previous file (or none), never a
    truncated one.

    Args:
        path: Final path.
        writer: Callable writing the whole file at the path it is given.
        suffix: Suffix of the temporary file (Keras wants `.keras`).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        writer(tmp)
        # mkstemp creates the file private (0600); give it the usual mode.
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, payload: Any) -> None:
    """Writes JSON atomically."""
    def writer(tmp):
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=jsonable)

    write_atomic(path, writer)


def jsonable(value: Any) -> Any:
    """JSON fallback for NumPy scalars / arrays (others become strings)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def read_json(path: str, what: str) -> dict:
    """Reads a JSON object, naming the file in every error.

    Args:
        path: Path of the JSON file.
        what: How the file is called in error messages (e.g. `"metrics"`).

    Returns:
        The parsed dictionary.

    Raises:
        ValueError: if the file is missing, not valid JSON, or not an object.
    """
    if not os.path.isfile(path):
        raise ValueError(f"The {what} file does not exist: {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"The {what} file {path!r} is not valid JSON (truncated or corrupted): {err}"
        ) from err
    if not isinstance(payload, dict):
        raise ValueError(f"The {what} file {path!r} must hold a JSON object")
    return payload
