"""The CNF and latent ODE experiments take their solver from the `solver/` group: profiles set budgets
(tolerances among them), never the method or the gradient strategy; an override changes either."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.cnf import validate_config as validate_cnf
from experiments.latent_ode import validate_config as validate_latent_ode
from experiments.solver_group import solver_of
from neuralode import Adjoint, Direct, SolverConfig
from neuralode.tasks import model_from_settings

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("smoke", "quick", "paper")


def _compose(experiment: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name=experiment, overrides=list(overrides))


def test_profiles_name_no_solver_method_or_gradient_for_the_cnf_and_latent_ode():
    for profile in PROFILES:
        sections = OmegaConf.load(REPO / "configs" / "profile" / f"{profile}.yaml")
        for experiment in ("latent_ode", "cnf"):
            keys = set(OmegaConf.to_container(sections[experiment]))
            assert not keys & {"adjoint", "gradient", "method", "solver"}, (profile, experiment, keys)


@pytest.mark.parametrize(("experiment", "gradient"), [("latent_ode", Direct()), ("cnf", Adjoint())])
def test_smoke_quick_and_paper_solve_alike_but_for_the_tolerances(experiment, gradient):
    solvers = {p: solver_of(_compose(experiment, f"profile={p}")) for p in PROFILES}
    assert {s.gradient for s in solvers.values()} == {gradient}
    assert {s.method for s in solvers.values()} == {"dopri5"}
    for profile, solver in solvers.items():  # with the smoke run's tolerances, every profile's is smoke's
        smoke = solvers["smoke"]
        assert dataclasses.replace(solver, rtol=smoke.rtol, atol=smoke.atol) == smoke, profile
    assert solvers["paper"].rtol != solvers["smoke"].rtol  # the budgets do differ


@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_the_latent_ode_gradient_is_an_explicit_override_in_any_profile(profile):
    cfg = _compose("latent_ode", f"profile={profile}", "solver.gradient=adjoint")
    validate_latent_ode(cfg)
    assert solver_of(cfg).gradient == Adjoint()
    assert model_from_settings(cfg).solver == solver_of(cfg)  # the model gets exactly the group's config
    assert solver_of(_compose("latent_ode", f"profile={profile}")).gradient == Direct()


def test_the_cnf_solver_group_can_be_swapped_and_t1_stays_a_model_setting():
    cfg = _compose("cnf", "profile=smoke", "solver=rk4", "solver.gradient=checkpoint", "t1=0.5")
    validate_cnf(cfg)
    solver = solver_of(cfg)
    assert (solver.method, solver.gradient.name, dict(solver.options)) == (
        "rk4",
        "checkpoint",
        {"step_size": 0.1},
    )
    assert solver.rtol == cfg.profile.cnf.density.tol and cfg.t1 == 0.5 and "t1" not in cfg.solver


def test_a_changed_copy_of_the_run_solver_leaves_the_original_untouched():
    original = solver_of(_compose("latent_ode", "profile=smoke"))
    fields = {f.name: getattr(original, f.name) for f in dataclasses.fields(original)}
    tighter = dataclasses.replace(original, rtol=1e-6, atol=1e-7)
    assert {f: getattr(original, f) for f in fields} == fields and tighter != original
    assert original == solver_of(_compose("latent_ode", "profile=smoke"))
    assert (tighter.method, tighter.gradient) == (original.method, original.gradient)
    assert isinstance(tighter, SolverConfig) and tighter.rtol == 1e-6


@pytest.mark.parametrize(
    ("name", "sweep"),
    [
        ("cnf_density", {"task": "density", "target": "u1,u2,u3,u4", "flow": "planar,cnf", "size": "2,8,32"}),
        ("cnf_mle", {"task": "mle", "target": "circles,moons", "flow": "planar,cnf", "size": "64"}),
        (
            "cnf_trace",
            {"task": "mle", "target": "moons", "flow": "mlp", "size": "64", "trace": "exact,hutchinson"},
        ),
    ],
)
def test_the_cnf_figure_sweeps_are_configs(name, sweep):
    """``make cnf`` runs these three experiment configs: the sweeps its command lines used to spell out."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("cnf", overrides=[f"experiment={name}", "profile=smoke"], return_hydra_config=True)
    assert {k: str(v) for k, v in cfg.hydra.sweeper.params.items()} == sweep
    assert "experiment" in cfg.hydra.job.config.override_dirname.exclude_keys  # same run folders as before
