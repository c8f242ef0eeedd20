"""`make experiments`: runs the reproduction study, decides its claims, renders the document.

1. The timing claims' paired step timings (`timing.py`) not measured yet,
   alone on the machine (in `--quick`, while the units run: toy timings
   decide nothing); then every unfinished unit (arm x seed, `experiments.units`) of `ORDER` is trained
   and evaluated by `--workers` processes; finished units and timings are
   never redone, so a re-run after a kill continues where it stopped.
2. `claims.decide_all` writes `summary.json` (one record per decided claim;
   claims whose units are not all done are listed as pending).
3. `report.render` writes `docs/REPRODUCTION.md` and the README's summary line.

`--quick` (`make experiments QUICK=1`, in the test suite) runs the PGD-AT arms
at toy size (2 epochs, 3 seeds, 40 test points, AutoAttack at a tenth of its
iterations, FastAT's step timing only) into
`experiments/results/quick/` and renders the document there.

Usage:
  python -m experiments.run_study [--workers=2] [--report-only]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Optional, Sequence

from experiments import arms, claims, report, timing, workers

HERE = os.path.dirname(os.path.abspath(__file__))

# Run order of the arms (within a group seed by seed), most important claims first.
ORDER = (
    ("digits", ("pgdat", "pgdat_he")),
    ("digits", ("trades", "trades_he")),
    ("digits", ("alp", "alp_he")),
    ("digits", ("pgdat_mhe", "trades_mhe", "alp_mhe")),
    ("digits", ("standard", "trades_b1", "hat", "trades_b5")),
    ("digits", ("pgdat_ft",)),
    ("digits", ("pgdat_he_lis", "pgdat_he_cmp")),
    ("digits", ("pgdat_fnwn", "pgdat_fn", "pgdat_wn")),
    ("digits", ("pgdat_he_k3", "trades_he_m0", "trades_he_m05", "trades_he_s1")),
    ("digits", ("fastat", "fastat_he", "freeat", "freeat_he")),
    # 40-90 minutes per unit (AutoAttack on 1,000 28x28 test points).
    ("mnist5k", ("pgdat", "pgdat_he")),
)
# The standard unit of a seed first: the PGD-AT unit's margins need its model,
# and are then added by the worker that trained the PGD-AT unit, not afterwards in one process.
QUICK_ORDER = (("digits", ("standard", "pgdat", "pgdat_he")),)
QUICK_PAIRS = 4  # timed step pairs per seed in --quick
QUICK_TIMED = ("fastat",)  # in --quick (FreeAT's 8 replays a step would double the toy run)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy sizes (about a minute)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (2 cores: 2)")
    p.add_argument("--results", default=None, help="unit JSONs and summary.json")
    p.add_argument("--doc", default=None, help="where the document is rendered")
    p.add_argument("--readme", default=None, help="README whose summary line is rewritten")
    p.add_argument("--report-only", action="store_true", help="only decide and render")
    args = p.parse_args(argv)
    results = args.results or (os.path.join(HERE, "results", "quick") if args.quick else arms.RESULTS)
    runs = os.path.join(results, "runs") if args.quick else arms.RUNS
    doc = args.doc or (os.path.join(results, "REPRODUCTION.md") if args.quick
                       else os.path.join(os.path.dirname(HERE), "docs", "REPRODUCTION.md"))
    readme = args.readme or (None if args.quick else os.path.join(os.path.dirname(HERE), "README.md"))
    if not args.report_only:
        started = time.time()
        invocation = report.log_invocation(results, started)
        measure = functools.partial(timing.run, results, pairs=QUICK_PAIRS if args.quick else timing.PAIRS,
                                    log=workers.log,
                                    frameworks=QUICK_TIMED if args.quick else tuple(timing.FRAMEWORKS))
        if not args.quick:
            measure()  # alone on the machine, before any unit
        seeds = arms.QUICK_SEEDS if args.quick else None
        # One list for all workers: a worker that finishes a group's last unit
        # goes on with the next group instead of waiting.
        todo = [unit for dataset, arm_names in (QUICK_ORDER if args.quick else ORDER)
                for unit in arms.units(dataset, arm_names, seeds or arms.SEEDS[dataset])]
        workers.run_workers(todo, results, runs, args.quick, args.workers,
                            meanwhile=measure if args.quick else None)
        # Second pass: analyses that became possible once later units ran
        # (margins need the standard model of the same seed), in fresh
        # one-thread workers with --workers > 1 (this process's TensorFlow
        # may have timed steps on all cores).
        workers.run_workers(todo, results, runs, args.quick, args.workers)
        report.log_invocation(results, started, time.time(), invocation)
    records, pending = claims.decide_all(results, quick=args.quick)
    problems = claims.check(records, claims.test_split_sizes(args.quick), args.quick)
    report.write_summary(results, records, pending, problems, claims.failed_units(results))
    report.render(results, doc, readme, quick=args.quick)
    print(f"rendered {doc}: {len(records)} claims decided, {len(pending)} pending", flush=True)
    if problems:
        print("error: summary records break the study's rules: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
