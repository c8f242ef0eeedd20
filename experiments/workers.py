"""Worker processes: each runs every unfinished, unclaimed unit it is given.

Workers claim units through lock files (`experiments.locks`), so several
can run side by side and a re-run after a kill takes the unfinished units
only. Each worker runs TensorFlow on one thread (one worker per core).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Callable, Optional, Sequence

import tensorflow as tf

from he_keras.files import read_json

from experiments.analyses import (
    add_corruptions,
    add_margins,
    add_weight_norms,
    corruptions_missing,
    margins_missing,
    weight_norms_missing,
)
from experiments.arms import ARMS, RESULTS, RUNS, unit_path
from experiments.lifecycle import retire_superseded, superseded
from experiments.locks import claim, release
from experiments.units import missing_attacks, regenerate, run_unit, supplement


_STARTED = time.time()


def log(msg: str) -> None:
    """Flushed progress line with the worker's pid and the wall time."""
    print(f"[study {os.getpid()} {time.time() - _STARTED:6.0f}s] {msg}", flush=True)


def one_thread() -> None:
    """Runs TensorFlow ops on one thread (one worker per core), unless this
    process has already started TensorFlow (the tests), which keeps its threads."""
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # "cannot be modified after initialization"
        pass


def work(todo: Sequence[tuple], results: str = RESULTS, runs: str = RUNS, quick: bool = False,
         log=print) -> int:
    """Runs every unfinished, unclaimed unit of `todo`; returns how many it ran."""
    one_thread()
    done = 0
    for dataset, arm, seed in todo:
        path = unit_path(dataset, arm, seed, results)
        if ARMS[arm].init_arm:  # first: retiring a stale source also retires what started from it
            retire_superseded(dataset, ARMS[arm].init_arm, seed, results, runs, quick, log)
        retire_superseded(dataset, arm, seed, results, runs, quick, log)
        if complete(path, results):
            continue
        if not claim(path):
            continue
        try:
            init_arm = ARMS[arm].init_arm
            if not os.path.exists(path) and init_arm:
                source = unit_path(dataset, init_arm, seed, results)
                if not (os.path.exists(source) and regenerate(source, runs, results, log)):
                    log(f"  {dataset}/{arm}/seed{seed}: waits for {init_arm}/seed{seed}")
                    continue
            if not os.path.exists(path):
                run_unit(dataset, arm, seed, results, runs, quick, log)
                done += 1
            if missing_attacks(path):
                supplement(path, runs, results, log)
            if margins_missing(path, results):
                # Under the standard unit's lock: two margin arms of a seed
                # must not retrain its standard model into one directory at once.
                standard = unit_path(dataset, "standard", seed, results)
                if claim(standard):
                    try:
                        if regenerate(path, runs, results, log) and regenerate(standard, runs, results, log):
                            add_margins(path, runs, log)
                    finally:
                        release(standard)
            if weight_norms_missing(path) and regenerate(path, runs, results, log):
                add_weight_norms(path, runs, log)
            if corruptions_missing(path):
                add_corruptions(path, runs, log)
        finally:
            release(path)
    return done


def complete(path: str, results: str = RESULTS) -> bool:
    """Whether the unit JSON at `path` exists with every attack and analysis it can have now."""
    return os.path.exists(path) and not (missing_attacks(path) or margins_missing(path, results)
                                         or weight_norms_missing(path) or corruptions_missing(path))


def pending(todo: Sequence[tuple], results: str = RESULTS) -> list:
    """The units of `todo` that `work` would change: incomplete (`complete`) or superseded."""
    left = []
    for dataset, arm, seed in todo:
        path = unit_path(dataset, arm, seed, results)
        if not complete(path, results) or superseded(read_json(path, "study unit"), results):
            left.append((dataset, arm, seed))
    return left


def run_workers(todo: Sequence[tuple], results: str = RESULTS, runs: str = RUNS, quick: bool = False,
                workers: int = 1, meanwhile: Optional[Callable] = None) -> int:
    """Runs `todo` in `workers` spawned processes (in this one for 1); returns an exit code.

    With `workers` > 1, no more processes are spawned than units are
    `pending` (a spawned worker pays a TensorFlow import before it finds out
    there is nothing to do), and the pending units go to spawned workers,
    not to this process, whose TensorFlow may already run on more than one
    thread (a retrained model must repeat its unit's one-thread history bit
    for bit); with `workers` = 1 this process runs them, on one thread only
    if it has not started TensorFlow yet (`one_thread`).
    `meanwhile()`, if given, runs in this process while the workers run (the
    quick study times its steps then: toy timings decide nothing).
    """
    if workers <= 1:
        if meanwhile is not None:
            meanwhile()
        work(todo, results, runs, quick, log)
        return 0

    workers = min(workers, len(pending(todo, results)))
    procs = []
    if workers:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=work, args=(todo, results, runs, quick, log)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    if meanwhile is not None:
        meanwhile()
    for proc in procs:
        proc.join()
    failed = [proc.exitcode for proc in procs if proc.exitcode]
    if failed:
        raise RuntimeError(f"study workers failed with exit codes {failed}")
    return 0
