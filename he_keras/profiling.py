"""Which TensorFlow kernels a piece of work ran, and for how long."""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import tempfile
from typing import Callable, Optional

import tensorflow as tf


@dataclasses.dataclass
class KernelTime:
    """One kernel's total over a profiled call.

    Attributes:
        seconds: Summed duration of its executions (on the thread that ran
            each op; a kernel's own worker threads are not added again).
        calls: How many times it ran.
    """

    seconds: float = 0.0
    calls: int = 0


def kernel_times(fn: Callable[[], object], logdir: Optional[str] = None) -> dict:
    """Runs `fn()` under TensorFlow's profiler and totals its kernels.

    Ops are read from the trace's `tf_Compute` lines, where each event is
    named `<node name>:<kernel>` (e.g. `_MklNativeFusedConv2D`, `ReluGrad`).
    Events nest: a function call's event spans the kernels it ran, so the
    seconds of all kernels together count some time twice.

    Args:
        fn: The work to profile (trace it before, unless tracing is the
            point: the first call includes tracing and graph optimization).
        logdir: An empty directory for the profiler's files (a temporary
            one, removed afterwards, when None).

    Returns:
        `{kernel name: KernelTime}`.

    Example:

    >>> step = tf.function(lambda x: tf.sin(x) + tf.cos(x))
    >>> x = tf.ones([64, 64])
    >>> _ = step(x)  # traced first
    >>> kernel_times(lambda: [step(x).numpy() for _ in range(3)])["Sin"].calls
    3
    """
    if logdir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return kernel_times(fn, tmp)
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(str(logdir))
    try:
        fn()
    finally:
        tf.profiler.experimental.stop()
    times: dict = collections.defaultdict(KernelTime)
    for path in glob.glob(os.path.join(str(logdir), "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            names = {key: meta.name for key, meta in plane.event_metadata.items()}
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                for event in line.events:
                    kernel = times[names[event.metadata_id].rpartition(":")[2]]
                    kernel.seconds += event.duration_ps * 1e-12
                    kernel.calls += 1
    return dict(times)
