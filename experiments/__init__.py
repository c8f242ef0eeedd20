"""The reproduction study of the HE, class-wise AT and HAT papers, as a package.

Run from the repository root: `python -m experiments.run_study` (`make
experiments`), `python -m experiments.study`, `python -m experiments.calibrate`.

- `arms`: arms (training settings), regimes, seeds, where units live.
- `protocol`: the attacks of a unit's evaluation.
- `units`: one unit end to end (train, evaluate, record), retraining, supplements.
- `lifecycle`: units superseded by a changed regime or arm.
- `analyses`: margins, class weight norms, common corruptions.
- `locks`, `workers`: worker processes claiming units.
- `study`: the units' command line.
- `catalogue`, `outcomes`, `classwise`, `claims`, `stats`: the claims, the
  per-point outcomes their sides sum, the class-wise statistics, their
  decision and its statistics.
- `report`, `timing`, `calibrate`, `run_study`: the document, step timings,
  the regimes' calibration, `make experiments`.
"""

import os

# Before TensorFlow loads in any of the study's processes: quiet C++ logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
