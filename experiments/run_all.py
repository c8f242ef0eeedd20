"""Runs every reproduction experiment, then renders docs/REPRODUCTION.md.

`python experiments/run_all.py` (what `make experiments` runs) trains and
evaluates at the small-scale budget stated in each script, writing JSON and
PNG into experiments/results/ and the document into docs/REPRODUCTION.md.
`--quick` (`make experiments QUICK=1`) runs every script at toy size into
experiments/results/quick/ and renders the document there, so the scripts
are exercised without touching the committed results.

Experiments run in order of importance; one that fails is recorded (with its
traceback) in run_all.json and reported as "not run" in the document, and
the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from he_keras.files import read_json, write_json  # noqa: E402

EXPERIMENTS = (
    "exp1_table2",
    "exp3_table7",
    "exp8_hat",
    "exp7_classwise",
    "exp2_table3",
    "exp6_ablation",
    "exp4_figure2",
    "exp5_table9",
)
# Share of the time budget of each experiment (its planned cost). Time an
# experiment leaves unused goes to the ones after it, in proportion.
SHARES = {
    "exp1_table2": 0.46, "exp3_table7": 0.02, "exp8_hat": 0.11, "exp7_classwise": 0.12,
    "exp2_table3": 0.06, "exp6_ablation": 0.06, "exp4_figure2": 0.10, "exp5_table9": 0.07,
}
# Under 90 minutes on 2 cores with the report; on a CPU shared with other
# jobs the later seeds of an experiment are dropped (and said so) to keep it.
DEFAULT_BUDGET_MINUTES = 78.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="toy sizes (a few minutes)")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--doc", default=None, help="where the document is rendered")
    p.add_argument("--only", nargs="*", default=None, help="experiments to run (default all)")
    p.add_argument("--report-only", action="store_true", help="only render the document")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="time budget of the whole run (default 78; none in --quick): an "
                        "experiment starts another seed only if it fits in its share")
    args = p.parse_args(argv)
    out = args.out or os.path.join(HERE, "results", "quick" if args.quick else "")
    out = os.path.normpath(out)
    doc = args.doc or (os.path.join(out, "REPRODUCTION.md") if args.quick
                       else os.path.join(os.path.dirname(HERE), "docs", "REPRODUCTION.md"))
    os.makedirs(out, exist_ok=True)
    status_path = os.path.join(out, "run_all.json")
    status = read_json(status_path, "run status") if os.path.exists(status_path) else {}
    if not args.report_only:
        started = time.perf_counter()
        status.setdefault("experiments", {})
        status["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        status["quick"] = args.quick
        budget = args.budget_minutes or (None if args.quick else DEFAULT_BUDGET_MINUTES)
        status["budget_minutes"] = budget
        end = None if budget is None else time.time() + 60 * budget
        names = list(args.only or EXPERIMENTS)
        for i, name in enumerate(names):
            t0 = time.perf_counter()
            if end is not None:
                left = sum(SHARES.get(n, 0.05) for n in names[i:])
                share = SHARES.get(name, 0.05) / left
                os.environ["HE_EXPERIMENT_DEADLINE"] = str(time.time() + share * max(end - time.time(), 0))
            print(f"=== {name} ===", flush=True)
            try:
                module = importlib.import_module(name)
                module.main((["--quick"] if args.quick else []) + ["--out", out])
                status["experiments"][name] = {"status": "ok",
                                               "seconds": time.perf_counter() - t0}
            except Exception:  # noqa: BLE001 - recorded, the other experiments still run
                tb = traceback.format_exc()
                print(tb, flush=True)
                status["experiments"][name] = {"status": "failed", "traceback": tb[-3000:],
                                               "seconds": time.perf_counter() - t0}
            write_json(status_path, status)
        if not args.only:
            status["wall_seconds"] = time.perf_counter() - started
        status["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        write_json(status_path, status)
    import make_report

    make_report.main(["--results", out, "--doc", doc])
    print(f"rendered {doc}", flush=True)
    failed = [k for k, v in status.get("experiments", {}).items() if v["status"] != "ok"]
    return 1 if failed and args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
