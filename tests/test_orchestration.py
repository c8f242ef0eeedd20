"""The orchestration layer: one home per default and rule, one model loader,
framework defaults reachable with None, imports without cycles."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl import flags as absl_flags

import forkrun
from he_keras import defaults, export
from he_keras.data import load_dataset
from he_keras.evaluation import preset_attacks
from he_keras.models import build_model
from he_keras.models.io import load_model
from he_keras.runs import TrainConfig, execute
from he_keras.runs import flags as run_flags
from he_keras.runs.config import FRAMEWORK_PARAMETERS
from he_keras.runs.build import build_trainer
from he_keras.training import FRAMEWORKS, HAT, PGDAT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)


def _python(code: str, *args: str) -> dict:
    """Runs `code` in a fresh interpreter; returns the JSON of its last line."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# he_keras.defaults is loaded with other values *before* anything else of
# he_keras: every default that reads it changes, a copy of the number would not.
_PATCHED_DEFAULTS = r"""
import importlib.util, inspect, json, os, sys
spec = importlib.util.spec_from_file_location("he_keras.defaults", os.path.join("he_keras", "defaults.py"))
d = importlib.util.module_from_spec(spec)
spec.loader.exec_module(d)
d.DEFAULT_SCALE = 7.0
d.DEFAULT_MARGIN = {"linear": 0.0, "he": 0.35, "mhe": 0.05}
sys.modules["he_keras.defaults"] = d

from he_keras import export, layers, losses
from he_keras.models import MODELS, build_model, find_head, make_head
from he_keras.training import PGDAT
from he_keras.runs import TrainConfig
app_spec = importlib.util.spec_from_file_location("train_app", os.path.join("apps", "train.py"))
app = importlib.util.module_from_spec(app_spec)
app_spec.loader.exec_module(app)
from absl import flags

he = build_model("small_cnn", (8, 8, 1), 10, head="he")
mhe = build_model("trades_cnn", (8, 8, 1), 10, head="mhe")
print(json.dumps({
    "HypersphereDense": layers.HypersphereDense(10).get_config()["s"],
    "ArcCosLogits": layers.ArcCosLogits(10).get_config()["s"],
    "CosineMarginLoss.s": losses.CosineMarginLoss().s,
    "CosineMarginLoss.m": losses.CosineMarginLoss().m,
    "make_head": make_head("he", 10).get_config()["s"],
    "small_cnn": float(find_head(he).scale.numpy()),
    "trades_cnn": float(find_head(mhe).scale.numpy()),
    "resnets": sorted({inspect.signature(MODELS[n]).parameters["s"].default
                       for n in ("preact_resnet18", "wide_resnet")}),
    "TrainConfig.s": TrainConfig().s,
    "flag --s": flags.FLAGS["s"].default,
    "PGDAT margin he": PGDAT(he, eps=0.1, steps=1).margin,
    "PGDAT margin mhe": PGDAT(mhe, eps=0.1, steps=1).margin,
    "model card m": export.model_card(he, {"config": {"head": "he", "m": -1.0}})["m"],
}))
"""


def test_scale_and_margin_defaults_have_one_home():
    got = _python(_PATCHED_DEFAULTS)
    assert got.pop("resnets") == [7.0]
    assert got.pop("CosineMarginLoss.m") == 0.35
    assert got.pop("PGDAT margin he") == 0.35
    assert got.pop("PGDAT margin mhe") == 0.05
    assert got.pop("model card m") == 0.35
    assert got == dict.fromkeys(got, 7.0), got


def test_one_step_rule_for_evaluation_pgd(monkeypatch):
    eps = 0.3
    attacks, _ = preset_attacks("quick", None, eps, "linf", 0, 10)
    suite_pgd20 = next(a for a in attacks if a.name == "PGD-20").config
    trainer = PGDAT(build_model("small_cnn", (8, 8, 1), 10), eps=eps, steps=1)
    assert suite_pgd20["steps"] == trainer.eval_steps == defaults.EVAL_PGD_STEPS == 20
    assert suite_pgd20["step_size"] == trainer.eval_step_size == pytest.approx(2.5 * eps / 20)
    # Both read the rule when they build their attack, not a copy of it.
    monkeypatch.setattr(defaults, "PGD_STEP_FACTOR", 2.0)
    attacks, _ = preset_attacks("quick", None, eps, "linf", 0, 10)
    assert [a.config["step_size"] for a in attacks if a.name != "FGSM"] == [pytest.approx(0.03)] * 4
    assert PGDAT(build_model("small_cnn", (8, 8, 1), 10), eps=eps, steps=1).eval_step_size == pytest.approx(0.03)


def test_eps_probe_step_and_autoattack_budgets_have_one_home(monkeypatch):
    from he_keras.evaluation.margin import direction_attack
    from he_keras.evaluation.presets import autoattack_standard
    from he_keras.training import FRAMEWORKS, CatastrophicOverfittingStop

    # Radius: 0.3 on the digit datasets, 8/255 on natural images, everywhere.
    assert [defaults.default_eps(d) for d in ("digits", "mnist5k", "mnist", "cifar10", "imagenet2012")] \
        == [0.3, 0.3, 0.3, 8 / 255, 8 / 255]
    assert TrainConfig().dataset in defaults.DIGIT_DATASETS and TrainConfig().eps == defaults.DIGITS_EPS
    classifier = build_model("small_cnn", (8, 8, 1), 10)
    for name in ("pgdat", "trades", "fastat", "freeat"):
        assert FRAMEWORKS[name](classifier).eps == defaults.NATURAL_IMAGE_EPS, name
    # The eps/4 probe step and AutoAttack's iterations are read when an
    # attack is built, not copied.
    # (346 images: the probe `CatastrophicOverfittingStop` needs at its defaults.)
    x, y = np.zeros((346, 8, 8, 1), "float32"), np.zeros(346, "int64")
    monkeypatch.setattr(defaults, "PROBE_STEP_FRACTION", 0.5)
    monkeypatch.setattr(defaults, "AUTOATTACK_STEPS", 30)
    monkeypatch.setattr(defaults, "AUTOATTACK_QUERIES", 700)
    assert direction_attack(0.2).step_size == pytest.approx(0.1)
    assert CatastrophicOverfittingStop(x, y, eps=0.2).step_size == pytest.approx(0.1)
    chain, _ = autoattack_standard(0.3, "linf", 0, 10)
    budgets = {a.name: a.config.get("steps", a.config.get("n_queries")) for a in chain}
    assert budgets == {"APGD-CE": 30, "APGD-T": 30, "FAB-T": 30, "Square": 700}


def test_margin_needs_an_he_head_in_config_and_trainer(tmp_path):
    linear = build_model("small_cnn", (8, 8, 1), 10)
    for make in (lambda: TrainConfig(head="linear", m=0.2, output_dir=str(tmp_path)).validate(),
                 lambda: PGDAT(linear, eps=0.1, steps=1, margin=0.2)):
        with pytest.raises(ValueError, match="A margin needs an HE or m-HE head"):
            make()
    TrainConfig(head="he", m=0.2, output_dir=str(tmp_path)).validate()
    assert PGDAT(linear, eps=0.1, steps=1, margin=0.0).margin == 0.0


_FLAGFILE_TRAINERS = r"""
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("train_app", os.path.join("apps", "train.py"))
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)
from absl import flags
from he_keras.data import load_dataset
from he_keras.runs.build import build_trainer
data = load_dataset("digits")
out = {}
for name in sys.argv[1:]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", "--flagfile=" + os.path.join("configs", name), "--output_dir=/nonexistent/x"])
    config = app.config_from_flags()
    trainer = build_trainer(config, data)
    out[name] = [config.step_size, config.attack_bn_training, trainer.step_size, trainer.attack_training,
                 trainer.eps]
print(json.dumps(out))
"""


def test_every_setting_has_exactly_one_flag_with_its_default_and_help(tmp_path):
    values = absl_flags.FlagValues()
    run_flags.define_flags(values)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    # One flag per setting (framework_params: one per framework hyperparameter).
    assert set(values) == (fields.keys() - {"framework_params"}) | FRAMEWORK_PARAMETERS.keys()
    declared = {name for cls in FRAMEWORKS.values() for name in cls.hyperparameters}
    assert declared == FRAMEWORK_PARAMETERS.keys()
    for name in fields.keys() - {"framework_params"}:
        assert values[name].help == fields[name].metadata["help"], name
    # Unset, the flags give the config's defaults; set, they reach it typed.
    values(["train.py", f"--output_dir={tmp_path / 'a'}"])
    assert run_flags.config_from_flags(values) == TrainConfig(output_dir=str(tmp_path / "a"))
    values.unparse_flags()
    values(["train.py", f"--output_dir={tmp_path / 'b'}", "--framework=trades", "--beta=5", "--noresume",
            "--lr_decay_epochs=40,50", "--callbacks=he_lis", "--step_size=0.05", "--s=20"])
    config = run_flags.config_from_flags(values)
    assert (config.framework_params, config.resume, config.lr_decay_epochs, config.callbacks) == (
        {"beta": 5.0}, False, (40.0, 50.0), ("he_lis",))
    assert (config.step_size, config.s) == (0.05, 20.0)


def test_framework_defaults_reachable_with_none_from_flagfiles():
    """The FastAT / FreeAT flagfiles no longer repeat their framework's defaults."""
    # A process of its own for apps/train.py's flags; it need not be a fresh
    # interpreter: forked from the `forkrun` server (TensorFlow imported).
    args = ["-c", _FLAGFILE_TRAINERS, "digits_fastat.cfg", "digits_freeat_he.cfg", "quickstart.cfg"]
    proc = forkrun.run(args, timeout=300, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (config_step, config_bn, step, bn, eps) in got.items():
        expected = {"digits_fastat.cfg": (1.25 * eps, True), "digits_freeat_he.cfg": (eps, False),
                    "quickstart.cfg": (0.075, False)}[name]
        assert (step, bn) == pytest.approx(expected), name
        assert config_bn is None, name
        assert (config_step is None) == (name != "quickstart.cfg"), name


def test_train_config_none_reaches_the_framework_default():
    data = load_dataset("digits")
    for framework, steps, step, bn in (("pgdat", 3, 2.5 * 0.3 / 3, False), ("fastat", 1, 0.375, True),
                                       ("freeat", 1, 0.3, False)):
        trainer = build_trainer(TrainConfig(framework=framework, steps=steps, eps=0.3), data)
        assert (trainer.step_size, trainer.attack_training) == (pytest.approx(step), bn), framework
        forced = build_trainer(TrainConfig(framework=framework, steps=steps, eps=0.3, step_size=0.1,
                                           attack_bn_training=not bn), data)
        assert (forced.step_size, forced.attack_training) == (pytest.approx(0.1), not bn), framework


_IMPORTS = r"""
import json, sys
import he_keras.export, he_keras.models.io
export_imports = sorted(m for m in sys.modules if m.startswith("he_keras."))
from he_keras.training import hat
runner_after_hat = "he_keras.runs" in sys.modules
import he_keras.runs
from he_keras.training import FRAMEWORKS, CALLBACKS
print(json.dumps([export_imports, runner_after_hat, sorted(FRAMEWORKS), sorted(CALLBACKS)]))
"""


def test_export_imports_no_training_and_registries_no_cycles():
    export_imports, runner_after_hat, frameworks, callbacks = _python(_IMPORTS)
    assert "he_keras.export" in export_imports and "he_keras.models.io" in export_imports
    assert not [m for m in export_imports if m.startswith(("he_keras.training", "he_keras.evaluation"))]
    assert runner_after_hat is False  # HAT does not import the run layer
    assert "hat" in frameworks and "he_lis" in callbacks


def test_hat_declares_its_helper_run_and_the_run_layer_trains_it_first(tmp_path, monkeypatch):
    helper = tmp_path / "standard.keras"
    build_model("small_cnn", (8, 8, 1), 10).save(helper)
    calls = []

    def fake_run(config):
        calls.append(config)
        return {"model_path": str(helper)}

    monkeypatch.setattr(execute, "run", fake_run)
    config = TrainConfig(framework="hat", output_dir=str(tmp_path / "run"), callbacks=("he_lis",))
    prepared = execute.with_prerequisites(config)
    assert [(c.framework, c.callbacks, c.output_dir) for c in calls] == [
        ("standard", (), str(tmp_path / "run" / "helper"))]
    assert prepared.framework_params["helper_model"] == str(helper)
    # A helper run that finished is reused, not trained again.
    os.makedirs(tmp_path / "run" / "helper")
    shutil.copy(helper, tmp_path / "run" / "helper" / "model.keras")
    again = execute.with_prerequisites(config)
    assert len(calls) == 1 and again.framework_params["helper_model"] == str(tmp_path / "run" / "helper" / "model.keras")
    # Other frameworks need nothing first.
    assert execute.with_prerequisites(TrainConfig(output_dir=str(tmp_path / "pgdat"))).framework_params == {}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    keras.utils.set_random_seed(0)
    model = build_model("small_cnn", (8, 8, 1), 10, head="he")
    path = str(root / "model.keras")
    model.save(path)
    good = open(path, "rb").read()
    (root / "truncated.keras").write_bytes(good[: len(good) // 2])
    return model, root


def test_loader_reads_keras_files_and_serving_exports(saved):
    model, root = saved
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    expected = np.asarray(model(x))
    np.testing.assert_allclose(np.asarray(load_model(str(root / "model.keras"))(x)), expected, atol=1e-5)
    export.export_saved_model(model, str(root / "serving"))
    export.export_saved_model(model, str(root / "serving"))
    served = load_model(str(root / "serving"))  # the base directory: its newest version
    assert served.name == "2"
    np.testing.assert_allclose(np.asarray(served(x)), expected, atol=1e-4)
    with pytest.raises(ValueError, match="must be a `.keras` file"):
        load_model(str(root / "serving"), saved_model=False)


def test_truncated_model_gives_one_error_in_every_loader(saved):
    _, root = saved
    path = str(root / "truncated.keras")
    message = re.escape("could not be loaded: not a valid .keras archive (corrupted or truncated file)")
    with pytest.raises(ValueError, match=message) as direct:
        load_model(path)
    with pytest.raises(ValueError, match=message) as hat:
        HAT(build_model("small_cnn", (8, 8, 1), 10), helper_model=path, eps=0.1, steps=1)
    assert str(hat.value) == f"`helper_model`: {direct.value}"
