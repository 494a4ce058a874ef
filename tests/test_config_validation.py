"""Bad configs fail before Hydra makes any folder: exit code 2, one stderr line naming the key, no traceback.

Also: SolverConfig (what ODEBlock takes), CNF and LatentODE refuse bad solver settings when built, with the
library's own messages; RK-Net's and ODE-Net's configs differ only in solver.gradient.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from experiments.validation import Checker, ConfigError
from neuralode import Adjoint, Direct, ODEBlock, SolverConfig
from neuralode.flows import CNF, ConcatMLPField
from neuralode.models.latent_ode import LatentODE
from neuralode.solver_config import check_solver_settings

REPO = Path(__file__).resolve().parents[1]

# Through a subprocess, as a user runs them: single runs and multiruns (basic and submitit-local launcher).
CASES = [
    ("mnist", ["solver.rtol=-1"], "solver.rtol=-1", "rtol must be"),
    ("mnist", ["epochs=abc"], "epochs=abc", "integer"),
    ("mnist", ["seed=abc"], "seed=abc", "integer"),
    ("mnist", ["-m", "solver.rtol=1e-3,-1"], "solver.rtol=-1", "rtol must be"),
    ("cnf", ["solver.rtol=-1"], "solver.rtol=-1", "rtol must be"),
    ("latent_ode", ["solver.gradient=backprop"], "solver.gradient=backprop", "one of direct, adjoint"),
    (
        "mnist",
        ["model=rknet", "solver.gradient=sideways"],
        "solver.gradient=sideways",
        "must be one of direct",
    ),
    # Table 1's sweep: its RK-Net job (the third) is refused before the MLP's and ResNet's run
    ("mnist", ["-m", "experiment=table1", "solver.gradient=sideways"], "solver.gradient=sideways", "one of"),
    # the CNF figures' sweeps (configs/experiment/cnf_*.yaml): a bad point stops the sweep before any job
    ("cnf", ["-m", "experiment=cnf_density", "solver.rtol=-1"], "solver.rtol=-1", "rtol must be"),
    ("latent_ode", ["-m", "hydra/launcher=local", "net=rnn,latent_ode", "seed=abc"], "seed=abc", "integer"),
    ("nfe_stats", ["-m", "checkpoint=untrained", "rtol=1e-3,abc"], "rtol=abc", "number"),
    ("nfe_stats", ["checkpoint=untrained", "solver.gradient=direct"], "solver.gradient=direct", "adjoint"),
    ("nfe_stats", [], "checkpoint=???", "experiments.mnist model=odenet"),
]
# In-process (composed as Hydra does, then the experiment's validate_config): the rest of the keys.
COMPOSED = [
    ("mnist", ["solver.method=nonsense"], "solver.method=nonsense", "unknown"),
    ("mnist", ["solver.atol=-1"], "solver.atol=-1", "atol must be"),
    ("mnist", ["solver.rtol=0", "solver.atol=0"], "solver.rtol=0", "both 0"),
    ("mnist", ["+solver.options.nope=1"], "solver.options=", "unknown key"),
    ("mnist", ["+solver.adjoint.options.nrm=seminorm"], "solver.adjoint.options=", "unknown key"),
    ("mnist", ["+solver.adjoint.rtol=-1"], "solver.adjoint.rtol=-1", "adjoint_rtol must be"),
    ("mnist", ["+solver.adjoint.method=nonsense"], "solver.adjoint.method=nonsense", "unknown"),
    ("mnist", ["+solver.adjoint.nope=1"], "solver.adjoint=", "unknown key(s) ['nope']"),
    (
        "mnist",
        ["solver.gradient=checkpoint", "solver.checkpoint_every=0"],
        "solver.checkpoint_every=0",
        ">= 1",
    ),
    ("mnist", ["solver.options=3"], "solver.options=3", "mapping"),
    ("nfe_stats", ["checkpoint=nowhere.pt"], "checkpoint=nowhere.pt", "experiments.mnist model=odenet"),
    ("nfe_stats", ["checkpoint=untrained", "tolerances=[]"], "tolerances=[]", "non-empty"),
    ("mnist", ["batch_size=0"], "batch_size=0", ">= 1"),
    ("mnist", ["optimizer.lr=-0.1"], "optimizer.lr=-0.1", "> 0"),
    ("mnist", ["model=resnet", "model.num_blocks=abc"], "model.num_blocks=abc", "integer"),
    ("mnist", ["precision=fp64"], "precision=fp64", "one of"),
    ("cnf", ["flow=realnvp"], "flow=realnvp", "flow must be one of"),
    ("cnf", ["seed=abc"], "seed=abc", "integer"),
    ("cnf", ["flow=mlp", "solver.method=nonsense"], "solver.method=nonsense", "unknown"),
    ("cnf", ["t1=0"], "t1=0", "t1 must be a number > 0"),
    ("cnf", ["+solver.adjoint.method=nonsense"], "solver.adjoint.method=nonsense", "unknown"),
    ("cnf", ["+solver.adjoint.rtol=-1"], "solver.adjoint.rtol=-1", "adjoint_rtol must be"),
    ("cnf", ["+solver.adjoint.nrm=seminorm"], "solver.adjoint=", "unknown key"),
    ("cnf", ["solver.gradient=checkpoint", "solver.checkpoint_every=0"], "solver.checkpoint_every=0", ">= 1"),
    ("cnf", ["task=bogus"], "task=bogus", "one of"),
    ("latent_ode", ["solver.rtol=-1"], "solver.rtol=-1", "rtol must be"),
    ("latent_ode", ["solver.rtol=0", "solver.atol=0"], "solver.rtol=0", "both 0"),
    ("latent_ode", ["+solver.options.nope=1"], "solver.options=", "unknown key"),
    ("latent_ode", ["epochs=abc"], "epochs=abc", "integer"),
    ("latent_ode", ["num_observed=500"], "num_observed=500", "num_observed must be in"),
    ("latent_ode", ["rnn.bptt.strategy=sometimes"], "rnn.bptt.strategy=sometimes", "one of"),
]


@pytest.mark.parametrize(("experiment", "overrides", "names", "says"), CASES)
def test_a_bad_config_fails_in_one_line_before_any_folder(tmp_path, experiment, overrides, names, says):
    flags = [o for o in overrides if o.startswith("-")]
    rest = [o for o in overrides if not o.startswith("-")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", f"experiments.{experiment}", *flags, "profile=smoke", *rest],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {names}") and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert list(tmp_path.iterdir()) == [], "no run folder (nor runs/, multirun/, outputs/) is made"


@pytest.mark.parametrize(("experiment", "overrides", "names", "says"), COMPOSED)
def test_each_experiment_validates_its_whole_config(experiment, overrides, names, says):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name=experiment, overrides=["profile=smoke", *overrides])
    validate = importlib.import_module(f"experiments.{experiment}").validate_config
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value).startswith(names) and says in str(info.value)


@pytest.mark.parametrize("experiment", ["mnist", "cnf", "latent_ode"])
def test_the_shipped_configs_pass(experiment):
    for profile in ("smoke", "quick", "paper"):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(config_name=experiment, overrides=[f"profile={profile}"])
        importlib.import_module(f"experiments.{experiment}").validate_config(cfg)


def test_the_checker_names_the_key_and_value():
    cfg = OmegaConf.create({"a": {"b": "x"}, "n": 3, "f": 0.5, "i": "${a.missing}"})
    check = Checker(cfg)
    with pytest.raises(ConfigError, match=r"^a\.b=x: a\.b must be an integer >= 1$"):
        check.integer("a.b", 1)
    with pytest.raises(ConfigError, match=r"^n=3: n must be an integer in \[0, 2\]$"):
        check.integer("n", 0, 2)
    with pytest.raises(ConfigError, match="f must be a number in"):
        check.number("f", 0, 0.5, open_high=True)
    with pytest.raises(ConfigError, match=r"^i=.*cannot be resolved"):
        check.integer("i")
    check.integer("n", 1)
    check.number("f", 0, 1)


@pytest.mark.parametrize(
    ("kwargs", "argument", "says"),
    [
        ({"rtol": -1, "method": "nonsense"}, "rtol", "rtol must be"),
        ({"method": "nonsense"}, "method", 'method="nonsense" is unknown'),
        ({"atol": float("nan")}, "atol", "atol must be"),
        ({"options": {"first_step": -1.0}}, "options", "first_step"),
        ({"method": "rk4", "options": {"step_size": -0.1}}, "options", "step_size"),
        ({"rtol": 0, "atol": 0}, "rtol", "both 0"),
        ({"gradient": Adjoint(options={"nrm": "seminorm"})}, "adjoint_options", "unknown key"),
    ],
)
def test_the_solver_config_an_odeblock_takes_refuses_bad_settings_when_built(kwargs, argument, says):
    with pytest.raises((ValueError, TypeError), match=says) as info:
        SolverConfig(**kwargs)
    assert info.value.argument == argument


def test_odeblock_refuses_what_is_not_a_solver_config_or_an_interval():
    with pytest.raises(TypeError, match="SolverConfig"):
        ODEBlock(nn.Linear(2, 2), solver={"method": "dopri5"})
    for t in ((0.0,), (1.0, 1.0), (0.0, float("inf"))):
        with pytest.raises(ValueError, match="t must be"):
            ODEBlock(nn.Linear(2, 2), t)


def test_cnf_and_latent_ode_take_only_a_checked_solver_config():
    with pytest.raises(ValueError, match="rtol must be"):
        SolverConfig(rtol=-1)  # a bad setting never reaches a model: the config refuses it when built
    with pytest.raises(ValueError, match="unknown"):
        SolverConfig(method="nonsense")
    with pytest.raises(ValueError, match="both 0"):
        SolverConfig(rtol=0.0, atol=0.0)
    for build in (
        lambda s: CNF(ConcatMLPField(2, hidden=4, layers=1), 2, solver=s),
        lambda s: LatentODE(solver=s),
    ):
        with pytest.raises(TypeError, match=r"solver must be a neuralode\.SolverConfig"):
            build({"method": "dopri5", "rtol": 1e-3, "atol": 1e-3})
        assert build(SolverConfig(method="rk4", options={"step_size": 0.1})).solver.method == "rk4"


def test_good_solver_settings_pass():
    check_solver_settings("rk4", 1e-3, 1e-3, {"step_size": 0.1}, adjoint_options={"step_size": 0.2})
    check_solver_settings("dopri5", 1e-3, 1e-3, adjoint_options={"norm": "seminorm"})
    adjoint = Adjoint(options={"step_size": 0.5})
    ODEBlock(nn.Linear(2, 2), solver=SolverConfig("rk4", options={"step_size": 0.25}, gradient=adjoint))
    ODEBlock(nn.Linear(2, 2), solver=SolverConfig(gradient=Adjoint(options={"norm": "seminorm"})))


def _flat(cfg, prefix: str = "") -> dict:
    """A config as {dotted key: value}, interpolations left as written."""
    items = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            items.update(_flat(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def test_rknet_and_odenet_configs_differ_only_in_solver_gradient():
    """Besides their names, the two Table 1 rows differ in one setting, whatever the solver group."""
    for solver in ("dopri5", "rk4"):
        flat = {}
        for model in ("rknet", "odenet"):
            with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
                cfg = compose(config_name="mnist", overrides=[f"model={model}", f"solver={solver}"])
            flat[model] = _flat(OmegaConf.to_container(cfg, resolve=False))
        assert flat["rknet"].keys() == flat["odenet"].keys()
        differ = {key for key in flat["rknet"] if flat["rknet"][key] != flat["odenet"][key]}
        assert differ == {"model.name", "model.label", "solver.gradient"}, differ
        assert (flat["rknet"]["solver.gradient"], flat["odenet"]["solver.gradient"]) == ("direct", "adjoint")
        mnist = importlib.import_module("experiments.mnist")
        gradients = {}
        for model in ("rknet", "odenet"):
            with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
                cfg = compose(config_name="mnist", overrides=[f"model={model}", f"solver={solver}"])
            gradients[model] = mnist.build_model(cfg).features.solver.gradient
        assert gradients == {"rknet": Direct(), "odenet": Adjoint()}


def test_the_table1_experiment_sweeps_the_four_models_into_their_usual_folders():
    from experiments.hydra_callback import _job_configs
    from neuralode.models.mnist import MODEL_NAMES

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="mnist", overrides=["experiment=table1", "profile=smoke"],
                      return_hydra_config=True)  # fmt: skip
        jobs = list(_job_configs(cfg))
    assert [job.model.name for job in jobs] == list(MODEL_NAMES)
    assert [job.solver.gradient for job in jobs[2:]] == ["direct", "adjoint"]
    assert all(job.hydra.job.override_dirname == "" for job in jobs)  # runs/mnist/<profile>/<model>/default
