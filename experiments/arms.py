"""The study's arms (training settings), regimes, seeds and where units live.

Every arm of a dataset shares that dataset's `REGIMES` entry (the calibrated
training regime) and differs only in what its claim varies; arms are paired
by seed (same initialisation seed, same validation split and data order). A
*unit* is one arm trained with one seed; its results JSON is `unit_path`,
its run directory (model, checkpoints; not committed) `run_dir`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
RUNS = os.path.join(ROOT, "runs", "study")
FORMAT = "he_keras.study/1"

# The calibrated regimes (experiments/results/calibration/, docs/REPRODUCTION.md):
# plain PGD-AT reaches clean >= 90 % and AutoAttack in [25, 85] % there.
REGIMES: dict = {
    "digits": dict(dataset="digits", model="small_cnn", eps=0.2, steps=7, epochs=60,
                   optimizer="adam", lr=2e-3, batch_size=64, lr_schedule="piecewise",
                   lr_decay_epochs=(40, 50), validation_split=0.1),
    # Without a warm-up, eps 0.3 (seed 003's) collapsed to a constant
    # predictor in 3 of 3 calibration runs and eps 0.25, calibrated on seed 0
    # only, in seeds 1 and 2 of the study's plain PGD-AT (those units are in
    # results/superseded/). Growing the training eps from 0 over the
    # first 3 epochs trained seeds 1 and 2 at eps 0.3
    # (results/calibration/unevaluated/mnist5k_e30_s10_ep15_step10-13_warm3_*).
    "mnist5k": dict(dataset="mnist5k", model="small_cnn", eps=0.3, steps=10, epochs=15,
                    eps_warmup_epochs=3, optimizer="adam", lr=1e-3, batch_size=64,
                    lr_schedule="piecewise", lr_decay_epochs=(10, 13), validation_split=0.1),
}
SEEDS = {"digits": 5, "mnist5k": 3}
# Toy sizes for `--quick` (the test suite): a few seconds per unit.
QUICK = dict(epochs=2, lr_schedule="constant", lr_decay_epochs=())
QUICK_SEEDS, QUICK_N_TEST = 3, 40
# The AutoAttack chains' share of AutoAttack's iterations in `--quick` (10
# steps, 500 Square queries): the toy units test the pipeline, not a model.
QUICK_AA_BUDGET = 0.1


@dataclasses.dataclass(frozen=True)
class Arm:
    """One training setting of the study.

    Attributes:
        framework: `he_keras.training.FRAMEWORKS` name.
        head: `"linear"`, `"he"` or `"mhe"`.
        params: `framework_params` of the trainer (e.g. TRADES' beta).
        overrides: Other `TrainConfig` fields that differ from the regime.
        temperatures: 1/T values of standalone Temperature-PGD runs added to
            the evaluation (seed 003 Table 6), on the cosines of HE heads.
        init_arm: Arm whose model (same seed) starts the training
            (`init_model`: fine-tuning); "" for a fresh initialization.
    """
    framework: str
    head: str = "linear"
    params: tuple = ()
    overrides: tuple = ()
    temperatures: tuple = ()
    init_arm: str = ""

    def spec(self, dataset: str, seed: int, quick: bool = False) -> dict:
        """The `TrainConfig` fields of this arm with `seed` (and `init_arm`, see `train_config`)."""
        spec = dict(REGIMES[dataset], framework=self.framework, head=self.head,
                    framework_params=dict(self.params), seed=seed)
        if self.init_arm:
            spec["init_arm"] = self.init_arm
        spec.update(dict(self.overrides))
        if quick:
            full = spec["epochs"]
            spec.update(QUICK)
            if spec.get("eps_warmup_epochs"):  # the same share of the (shorter) run
                spec["eps_warmup_epochs"] *= spec["epochs"] / full
        return spec


# The HE paper's framework settings (Sec. 4): ALP pairing weight 0.5, TRADES beta 6.
FRAMEWORK_PARAMS = {"pgdat": (), "alp": (("beta", 0.5),), "trades": (("beta", 6.0),)}
# Seed 003 Table 6: HE's lead at 1/T = 1, its reversal at 50; PGD-AT is
# weakest at 1/T = 5 (1 and 50 come first: their attack seeds stay fixed).
TEMPERATURES = (1.0, 50.0, 5.0, 10.0)
ARMS: dict[str, Arm] = {}
for _fw, _params in FRAMEWORK_PARAMS.items():
    for _head, _suffix in (("linear", ""), ("he", "_he"), ("mhe", "_mhe")):
        ARMS[_fw + _suffix] = Arm(_fw, _head, _params, temperatures=TEMPERATURES if _fw == "pgdat" else ())
ARMS.update({
    # HAT Table 1: TRADES with a smaller beta.
    "trades_b1": Arm("trades", params=(("beta", 1.0),)),
    # HAT Table 2's TRADES baseline (beta 5, not the HE paper's 6).
    "trades_b5": Arm("trades", params=(("beta", 5.0),)),
    # HAT (Algorithm 1; its helper is a standard model of the same seed).
    "hat": Arm("hat", params=(("beta", 2.5), ("gamma", 0.5), ("helper_step", 2.0))),
    # Seed 003 Table 5: HE head without margin, scale schedules.
    "pgdat_he_lis": Arm("pgdat", "he", overrides=(("m", 0.0), ("callbacks", ("he_lis",))),
                        temperatures=TEMPERATURES),
    "pgdat_he_cmp": Arm("pgdat", "he", overrides=(("m", 0.0), ("callbacks", ("he_cmp",))),
                        temperatures=TEMPERATURES),
    # HE paper Sec. 4.1 ablation (no margin): FN only, WN only, FN + WN.
    "pgdat_fn": Arm("pgdat", "he", overrides=(("m", 0.0), ("weight_norm", False))),
    # Without FN the features carry the scale themselves: s = 1 (logits W_n^T f).
    "pgdat_wn": Arm("pgdat", "he", overrides=(("m", 0.0), ("feature_norm", False), ("s", 1.0))),
    "pgdat_fnwn": Arm("pgdat", "he", overrides=(("m", 0.0),)),
    # HE paper Figure 2 (left): HE trained with 3 PGD steps.
    "pgdat_he_k3": Arm("pgdat", "he", overrides=(("steps", 3),)),
    # HE paper Table 9 (TRADES+HE): margin 0 and 0.5, scale 1.
    "trades_he_m0": Arm("trades", "he", FRAMEWORK_PARAMS["trades"], overrides=(("m", 0.0),)),
    "trades_he_m05": Arm("trades", "he", FRAMEWORK_PARAMS["trades"], overrides=(("m", 0.5),)),
    "trades_he_s1": Arm("trades", "he", FRAMEWORK_PARAMS["trades"], overrides=(("s", 1.0),)),
})
# The standard (clean) model of each seed: the source of HAT's initial
# adversarial directions R0 (margin analysis below).
ARMS["standard"] = Arm("standard")
# HAT Sec. 3 / App. B.1: PGD-AT fine-tuning of that standard model (HAT: 25
# epochs after 50 of standard training; here 30 after 60, the regime's
# optimizer with its decays moved to epochs 20 and 25).
ARMS["pgdat_ft"] = Arm("pgdat", init_arm="standard",
                       overrides=(("epochs", 30), ("lr_decay_epochs", (20, 25))))
# HE paper Table 3: FastAT (FGSM from a uniform start, step 1.25 eps, with
# the catastrophic-overfitting early stop) and FreeAT (8 replays, `epochs`
# = the regime's budget) with and without HE.
for _head, _suffix in (("linear", ""), ("he", "_he")):
    ARMS["fastat" + _suffix] = Arm("fastat", _head, overrides=(
        ("steps", 1), ("callbacks", ("fastat_early_stop",))))
    ARMS["freeat" + _suffix] = Arm("freeat", _head, params=(("replays", 8),), overrides=(("steps", 1),))


def unit_path(dataset: str, arm: str, seed: int, results: str = RESULTS) -> str:
    """Where the results JSON of one unit lives."""
    return os.path.join(results, dataset, arm, f"seed{seed}.json")


def run_dir(runs: str, dataset: str, arm: str, seed: int) -> str:
    """Where the run (model, checkpoints) of one unit lives."""
    return os.path.join(runs, dataset, arm, f"seed{seed}")


def units(dataset: str, arms: Sequence[str], seeds: int) -> list:
    """Units in run order: seed-major, so every arm gets its first seeds first."""
    return [(dataset, arm, seed) for seed in range(seeds) for arm in arms]
