"""Unit locks: workers claim a unit through an exclusive `flock` on `<json>.lock`.
"""

from __future__ import annotations

import fcntl
import os


_LOCKS: dict = {}


def claim(path: str) -> bool:
    """Takes the lock of a unit: an exclusive `flock` on `<json>.lock`.

    The kernel drops the lock of a killed worker, so a re-run takes its unit
    over; two live workers never hold the same unit.
    """
    lock = path + ".lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _LOCKS[path] = fd
    return True


def release(path: str) -> None:
    """Drops the lock taken by `claim` (the lock file stays: removing it would race)."""
    fd = _LOCKS.pop(path, None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
