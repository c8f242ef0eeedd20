"""The reproduction study's units of work from the command line: arms x seeds.

A *unit* is one arm trained with one seed and evaluated once
(`experiments.units`); arms, regimes and seeds are in `experiments.arms`,
the evaluation protocol in `experiments.protocol`, the analyses of a
finished unit in `experiments.analyses`. Workers (`experiments.workers`)
claim units through lock files, so several can run side by side and a
re-run after a kill takes the unfinished units only.

Usage (from the repository root):
  python -m experiments.study --list
  python -m experiments.study --dataset=digits --arms=pgdat,pgdat_he --workers=2
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from experiments.arms import ARMS, QUICK_SEEDS, REGIMES, RESULTS, RUNS, SEEDS, unit_path, units
from experiments.workers import run_workers


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=sorted(REGIMES))
    p.add_argument("--arms", default="", help="comma-separated arm names (default: all)")
    p.add_argument("--seeds", type=int, default=0, help="seeds (default: the dataset's)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--quick", action="store_true", help="toy sizes, for the tests")
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--runs", default=RUNS)
    p.add_argument("--list", action="store_true", help="list arms and finished units")
    args = p.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a] or list(ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        print(f"error: unknown arm(s) {unknown}; known: {sorted(ARMS)}", file=sys.stderr)
        return 2
    seeds = args.seeds or (QUICK_SEEDS if args.quick else SEEDS[args.dataset])
    todo = units(args.dataset, arms, seeds)
    if args.list:
        for dataset, arm, seed in todo:
            state = "done" if os.path.exists(unit_path(dataset, arm, seed, args.results)) else "todo"
            print(f"{dataset}/{arm}/seed{seed}: {state}")
        return 0
    return run_workers(todo, args.results, args.runs, args.quick, args.workers)




if __name__ == "__main__":
    sys.exit(main())
