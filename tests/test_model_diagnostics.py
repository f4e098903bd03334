"""Solver diagnostics end to end: loss modules with ``diagnostics=True`` keep the
function's ``log=True`` dict, models turn its scalars into ``solver_*`` terms, and a
training run writes them per epoch to history.csv."""

from __future__ import annotations

import csv

import pytest
import torch

from otae import losses
from otae.discrepancies import hierarchical_fgw, max_sliced_fgw, sinkhorn, spherical_sliced_fgw
from otae.models import build_model, model_config_from_dict

from .helpers import gen, point_clouds


def clouds(n: int = 10, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return point_clouds(n, n, d, shift=0.5)


def same_log(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(torch.as_tensor(got[key]), torch.as_tensor(want[key]),
                                   rtol=0, atol=0, msg=key)


SPH = {"beta": 0.2, "kappa": 5.0, "n_projections": 4, "n_iters": 3, "lr": 0.2}


@pytest.mark.parametrize("case", ["sinkhorn", "ssfg", "maxsfg"])
def test_module_keeps_the_functions_log(case):
    x, y = clouds()
    if case == "sinkhorn":
        module = losses.SinkhornLoss(epsilon=0.5, n_iters=20, diagnostics=True)
        value = module(x, y)
        want_value, want = sinkhorn(x, y, epsilon=0.5, n_iters=20, log=True)
    elif case == "ssfg":
        module = losses.SphericalSlicedFGWLoss(3, **SPH, diagnostics=True)
        value = module(x, y, generator=gen(1))
        want_value, _, want = spherical_sliced_fgw(
            x, y, **SPH, generator=gen(1), return_locations=True, log=True
        )
    else:
        options = {"beta": 0.2, "n_iters": 3, "lr": 0.2, "n_starts": 2}
        module = losses.MaxSlicedFGWLoss(3, **options, diagnostics=True)
        value = module(x, y, generator=gen(1))
        want_value, _, want = max_sliced_fgw(
            x, y, **options, generator=gen(1), return_direction=True, log=True
        )
    assert value.item() == want_value.item()
    same_log(module.last_diagnostics, want)


def test_hierarchical_module_keeps_the_functions_log():
    g = gen(2)
    mu_p, mu_q = torch.randn(8, 2, generator=g), torch.randn(3, 2, generator=g)
    sd_p, sd_q = torch.rand(8, 2, generator=g) + 0.5, torch.rand(3, 2, generator=g) + 0.5
    module = losses.HierarchicalFGWLoss(beta=0.1, n_outer=5, diagnostics=True)
    value = module(mu_p, sd_p, mu_q, sd_q)
    want_value, want = hierarchical_fgw(mu_p, sd_p, mu_q, sd_q, beta=0.1, n_outer=5, log=True)
    assert value.item() == want_value.item()
    same_log(module.last_diagnostics, want)


@pytest.mark.parametrize("name", ["prae", "sae", "ssfg", "mssfg", "pssfg", "maxsfg"])
def test_models_report_the_scalar_diagnostics_and_nothing_changes(name):
    """With diagnostics the loss is bit-identical; the extras are the module's scalars."""
    x = torch.rand(12, 1, 8, 8, generator=gen(3))
    terms = {}
    for diagnostics in (False, True):
        torch.manual_seed(0)
        model = build_model(
            model_config_from_dict({"name": name, "latent_dim": 3, "diagnostics": diagnostics}),
            (1, 8, 8), generator=gen(4),
        )
        terms[diagnostics] = model.loss(x, gen(5))
    plain, logged = terms[False], terms[True]
    assert logged["total"].item() == plain["total"].item()
    assert not any(k.startswith("solver_") for k in plain)
    info = model.discrepancy_loss.last_diagnostics
    want = {f"solver_{k}": float(v) for k, v in info.items() if torch.as_tensor(v).dim() == 0}
    assert want and {k: float(v) for k, v in logged.items() if k.startswith("solver_")} == want
    assert "solver_plan" not in logged  # plans and traces stay out of the logs


def test_models_without_an_iterative_solver_refuse_diagnostics():
    with pytest.raises(ValueError, match="DeterministicRAE has no iterative solver"):
        build_model(model_config_from_dict({"name": "drae", "latent_dim": 3,
                                            "diagnostics": True}), (1, 8, 8))
    with pytest.raises(ValueError, match="model.diagnostics needs model.divergence: false"):
        model_config_from_dict({"name": "sae", "diagnostics": True, "divergence": True})


def test_a_run_logs_the_solver_per_epoch(tmp_path):
    from otae.cli import main

    run = tmp_path / "run"
    args = ["train", "mnist/sae-quick", "--run-dir", str(run), "--no-report",
            "data.train_subset=60", "data.test_subset=30", "training.epochs=2",
            "training.batch_size=30", "network.architecture=mlp",
            "network.options={hidden: [16]}", "model.diagnostics=true", "model.n_iters=5",
            "training.progress=false", "evaluation.timing_steps=0"]  # fmt: skip
    assert main(args) == 0
    with open(run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        assert float(row["train_solver_n_iters"]) == 5.0
        assert 0.0 <= float(row["train_solver_marginal_error"]) <= 2.0
        assert float(row["train_solver_epsilon"]) == pytest.approx(0.1)
