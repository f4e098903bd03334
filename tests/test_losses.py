"""otae.losses: each module returns its function's value and gradients, saves its
randomness, compiles, runs under DDP; otae's models hold these modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from otae import losses
from otae.discrepancies import (
    hierarchical_fgw,
    input_checks,
    max_sliced_fgw,
    mmd,
    sinkhorn,
    sinkhorn_divergence,
    sliced_fgw,
    sliced_wasserstein,
    spherical_sliced_fgw,
)
from otae.discrepancies.mmd import WAE_SCALES
from otae.sphere import uniform_directions

from .helpers import gen, point_clouds

REPO = Path(__file__).resolve().parents[1]
N, D = 12, 3


def clouds(seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = point_clouds(N, N, D, seed=seed, scale=0.5, shift=1.0, dtype=dtype)
    return x.requires_grad_(), y.requires_grad_()


# (module, function of (x, y, generator) at the same options): modules with a generator
# get the seeded one passed to the function, the others none.
SPH = {"beta": 0.3, "kappa": 10.0, "n_projections": 5, "n_iters": 4, "lr": 0.2}
CASES = {
    "sw": (lambda: losses.SlicedWassersteinLoss(n_projections=7, seed=5),
           lambda x, y, g: sliced_wasserstein(x, y, n_projections=7, generator=g)),
    "sfgw": (lambda: losses.SlicedFGWLoss(beta=0.3, n_projections=7, seed=5),
             lambda x, y, g: sliced_fgw(x, y, beta=0.3, n_projections=7, generator=g)),
    "sfgw-authors": (lambda: losses.SlicedFGWLoss(0.2, 6, scale="rae_authors", seed=5),
                     lambda x, y, g: sliced_fgw(x, y, 0.2, 6, generator=g,
                                                scale="rae_authors")),
    "ssfg": (lambda: losses.SphericalSlicedFGWLoss(D, **SPH, seed=5),
             lambda x, y, g: spherical_sliced_fgw(x, y, **SPH, generator=g)),
    "mssfg": (lambda: losses.SphericalSlicedFGWLoss(D, **SPH, n_locations=3, seed=5),
              lambda x, y, g: spherical_sliced_fgw(x, y, **SPH, n_components=3, generator=g)),
    "pssfg": (lambda: losses.SphericalSlicedFGWLoss(D, **SPH, distribution="power", seed=5),
              lambda x, y, g: spherical_sliced_fgw(x, y, **SPH, distribution="power",
                                                   generator=g)),
    "maxsfg": (lambda: losses.MaxSlicedFGWLoss(D, beta=0.3, n_iters=4, n_starts=3, seed=5),
               lambda x, y, g: max_sliced_fgw(x, y, beta=0.3, n_iters=4, n_starts=3,
                                              generator=g)),
    "sinkhorn": (lambda: losses.SinkhornLoss(epsilon=0.5, n_iters=20),
                 lambda x, y, g: sinkhorn(x, y, epsilon=0.5, n_iters=20)),
    "sinkhorn-implicit": (lambda: losses.SinkhornLoss(0.5, 20, gradient="implicit",
                                                      epsilon_start=4.0),
                          lambda x, y, g: sinkhorn(x, y, 0.5, 20, gradient="implicit",
                                                   epsilon_start=4.0)),
    "sinkhorn-div": (lambda: losses.SinkhornLoss(epsilon=0.5, p=1, divergence=True),
                     lambda x, y, g: sinkhorn_divergence(x, y, epsilon=0.5, p=1)),
    "mmd": (lambda: losses.MMDLoss(kernel="imq", scales=WAE_SCALES),
            lambda x, y, g: mmd(x, y, kernel="imq", scales=WAE_SCALES)),
    "mmd-gauss": (lambda: losses.MMDLoss(kernel="gaussian", scale=2.0),
                  lambda x, y, g: mmd(x, y, kernel="gaussian", scale=2.0)),
}


def value_and_grads(fn, x, y):
    value = fn(x, y)
    gx, gy = torch.autograd.grad(value, (x, y))
    return value.detach(), gx, gy


@pytest.mark.parametrize("case", sorted(CASES))
def test_module_equals_function_value_and_gradients(case):
    make, function = CASES[case]
    x, y = clouds(1)
    module = make()
    expected = value_and_grads(lambda a, b: function(a, b, gen(5)), x, y)
    got = value_and_grads(module, x, y)
    assert expected[0].dtype == torch.float64 and expected[0].abs() > 0
    for e, v in zip(expected, got, strict=True):
        assert torch.equal(v, e)


def test_hierarchical_module_equals_function():
    g = gen(2)
    mp, mq = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g,
                                                                              dtype=torch.float64)
    sp = torch.rand(6, 2, generator=g, dtype=torch.float64) + 0.1
    sq = torch.rand(4, 2, generator=g, dtype=torch.float64) + 0.1
    inputs = [t.requires_grad_() for t in (mp, sp, mq, sq)]
    options = {"beta": 0.4, "n_outer": 7, "n_inner": 3, "tau": "auto"}
    expected = hierarchical_fgw(*inputs, **options)
    got = losses.HierarchicalFGWLoss(**options)(*inputs)
    assert torch.equal(got, expected) and expected > 0
    for e, v in zip(torch.autograd.grad(expected, inputs), torch.autograd.grad(got, inputs),
                    strict=True):
        assert torch.equal(v, e)


def test_passed_generator_overrides_the_owned_one_and_projections_draw_nothing():
    x, y = clouds(2)
    module = losses.SlicedFGWLoss(beta=0.5, n_projections=4, seed=1)
    state = module.generator.get_state()
    assert torch.equal(module(x, y, generator=gen(9)),
                       sliced_fgw(x, y, 0.5, 4, generator=gen(9)))
    assert torch.equal(module.generator.get_state(), state)  # untouched
    theta = uniform_directions(4, D, generator=gen(3), dtype=torch.float64).T
    assert torch.equal(module(x, y, projections=theta), sliced_fgw(x, y, 0.5, projections=theta))
    assert torch.equal(module.generator.get_state(), state)


def test_spherical_module_warm_starts_from_its_buffer_in_training_only():
    x, y = clouds(3)
    module = losses.SphericalSlicedFGWLoss(D, **SPH)
    assert module.initial_locations() is None and not module.searched
    module(x, y, generator=gen(1))
    found = module.locations.clone()
    torch.testing.assert_close(found.norm(dim=-1), torch.ones(1, dtype=found.dtype))
    init = found.double()  # the buffer is cast to the inputs' dtype
    expected = spherical_sliced_fgw(x, y, **SPH, generator=gen(2), init_locations=init)
    module.eval()
    assert torch.equal(module(x, y, generator=gen(2)), expected)
    assert torch.equal(module.locations, found)  # evaluation leaves the buffer alone
    module.train()
    value, again = spherical_sliced_fgw(x, y, **SPH, generator=gen(2), init_locations=init,
                                        return_locations=True)
    assert torch.equal(module(x, y, generator=gen(2)), value)
    assert torch.equal(module.locations, again.float())


def test_maxsliced_warm_start_adds_fresh_starts_first():
    x, y = clouds(4)
    module = losses.MaxSlicedFGWLoss(D, beta=0.3, n_iters=3, n_starts=3)
    module(x, y, generator=gen(1))
    previous = module.locations.double()
    g = gen(2)
    init = torch.cat((previous, uniform_directions(2, D, generator=g, dtype=torch.float64)))
    expected = max_sliced_fgw(x, y, beta=0.3, n_iters=3, generator=g, init_directions=init)
    assert torch.equal(module(x, y, generator=gen(2)), expected)


# ---------------------------------------------------------------------- state dicts
def test_modules_without_a_seed_add_only_real_state():
    for case, (make, _) in CASES.items():
        module = make()
        expected = set()
        if case in ("ssfg", "mssfg", "pssfg", "maxsfg"):
            expected.add("locations")
        if getattr(module, "generator", None) is not None:
            expected.add("generator_state")
        assert set(module.state_dict()) == expected, case
    assert not losses.SlicedFGWLoss().state_dict()
    assert set(losses.SphericalSlicedFGWLoss(4).state_dict()) == {"locations"}
    assert not losses.HierarchicalFGWLoss().state_dict()


@pytest.mark.parametrize("case", ["sfgw", "sw", "mssfg", "maxsfg"])
def test_checkpoint_resumes_the_same_draws(case):
    make = CASES[case][0]
    x, y = clouds(5)
    module = make()
    for _ in range(2):
        module(x, y)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    continued = [module(x, y) for _ in range(3)]
    fresh = make()
    fresh(x, y)  # a different state, overwritten by loading
    fresh.load_state_dict(state)
    resumed = [fresh(x, y) for _ in range(3)]
    for a, b in zip(continued, resumed, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(continued[0], continued[1])  # fresh draws each call


# ---------------------------------------------------------------------- compile
@pytest.mark.slow
@pytest.mark.parametrize("case", ["sw", "sfgw", "ssfg", "maxsfg", "sinkhorn", "mmd"])
def test_compiled_module_equals_eager(case):
    """One case per module class (compiling is slow on CPU: 4-40 s each)."""
    torch._dynamo.reset()
    make = CASES[case][0]
    x, y = (t.detach() for t in clouds(6))
    eager, compiled = make(), torch.compile(make(), backend="aot_eager")
    for _ in range(2):  # the second call: warm starts and advanced generators
        # float64 agreement to rounding (decomposed kernels may round differently)
        torch.testing.assert_close(compiled(x, y), eager(x, y), rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_compiled_hierarchical_module_equals_eager():
    torch._dynamo.reset()
    g = gen(2)
    inputs = (torch.randn(6, 2, generator=g, dtype=torch.float64),
              torch.rand(6, 2, generator=g, dtype=torch.float64) + 0.1,
              torch.randn(4, 2, generator=g, dtype=torch.float64),
              torch.rand(4, 2, generator=g, dtype=torch.float64) + 0.1)
    module = losses.HierarchicalFGWLoss(beta=0.4, n_outer=5, n_inner=3)
    compiled = torch.compile(module, backend="aot_eager")
    torch.testing.assert_close(compiled(*inputs), module(*inputs), rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_sliced_module_compiles_to_one_graph_with_projections():
    torch._dynamo.reset()
    x, y = (t.detach() for t in clouds(7))
    theta = uniform_directions(5, D, generator=gen(0), dtype=torch.float64).T
    module = losses.SlicedFGWLoss(beta=0.2)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    with input_checks(False):  # the finiteness checks read values back: a graph break
        assert torch.equal(compiled(x, y, projections=theta), module(x, y, projections=theta))


# ---------------------------------------------------------------------- models
def _model(name: str, **fields):
    from otae.models import build_model, model_config_from_dict

    config = model_config_from_dict({"name": name, "latent_dim": D, **fields})
    return build_model(config, (1, 4, 4), generator=gen(0))


# name: (loss class, non-default model fields, the function at those settings written out)
HELD = {
    "drae": (losses.SlicedFGWLoss, {"beta": 0.3, "n_projections": 5, "scale": "rae_authors"},
             lambda x, y, g: sliced_fgw(x, y, 0.3, 5, generator=g, scale="rae_authors")),
    "swae": (losses.SlicedWassersteinLoss, {"n_projections": 6},
             lambda x, y, g: sliced_wasserstein(x, y, 6, generator=g)),
    "wae": (losses.MMDLoss, {"kernel": "gaussian", "scales": [0.5, 2.0]},
            lambda x, y, g: mmd(x, y, kernel="gaussian", scales=(0.5, 2.0))),
    "sae": (losses.SinkhornLoss, {"epsilon": 0.3, "n_iters": 7, "p": 1},
            lambda x, y, g: sinkhorn(x, y, epsilon=0.3, n_iters=7, p=1)),
    "prae": (losses.HierarchicalFGWLoss, {"beta": 0.4, "n_outer": 6, "n_inner": 3, "tau": "auto"},
             lambda x, y, g: hierarchical_fgw(x, x.abs(), y, y.abs(), beta=0.4, n_outer=6,
                                              n_inner=3, tau="auto")),
    "ssfg": (losses.SphericalSlicedFGWLoss, SPH,
             lambda x, y, g: spherical_sliced_fgw(x, y, **SPH, generator=g)),
    "maxsfg": (losses.MaxSlicedFGWLoss, {"beta": 0.3, "n_iters": 4, "lr": 0.2, "n_starts": 2},
               lambda x, y, g: max_sliced_fgw(x, y, 0.3, n_iters=4, lr=0.2, n_starts=2,
                                              generator=g)),
}


@pytest.mark.parametrize("name", list(HELD))
def test_models_hold_their_loss_module(name):
    """The model's module is its function at the model's config: the same value as the
    function called with those settings written out (same draws from the generator)."""
    cls, fields, function = HELD[name]
    model = _model(name, **fields)
    module = model.discrepancy_loss
    assert type(module) is cls
    assert not hasattr(module, "generator_state")  # draws: the trainer's
    x, y = (t.detach().float() for t in clouds(8))
    with torch.no_grad():
        if name == "prae":  # (N, d) posterior and (K, d) prior components
            value = model.synced_loss()(x, x.abs(), y, y.abs())
        else:  # codes and prior samples
            value = model.discrepancy(x, y, gen(1))
        torch.testing.assert_close(value, function(x, y, gen(1)), rtol=1e-6, atol=1e-7)


def test_model_config_edits_reach_the_module():
    model = _model("drae", n_projections=5)
    model.config.n_projections = 9
    z, y = (t.detach().float() for t in clouds(8))
    assert torch.equal(model.discrepancy(z, y, gen(1)), sliced_fgw(z, y, 0.1, 9, generator=gen(1)))
    assert model.discrepancy_loss.n_projections == 9


def test_spherical_model_loads_a_checkpoint_made_before_the_module():
    model = _model("mssfg", n_locations=2)
    found = uniform_directions(2, D, generator=gen(4))
    # The old layout: parameters and buffers of the model, the locations at the top level.
    old = {name: t.clone() for name, t in model.named_parameters()}
    old.update({name: t.clone() for name, t in model.named_buffers()})
    del old["discrepancy_loss.locations"]
    old["locations"] = found
    fresh = _model("mssfg", n_locations=2)
    assert fresh.initial_locations(None) is None
    fresh.load_state_dict(old)  # strict
    assert torch.equal(fresh.locations, found) and torch.equal(fresh.initial_locations(None), found)
    assert "locations" in fresh.state_dict() and fresh.draw_schedule_key() == (True,)
    # the module's own key loads too
    again = _model("mssfg", n_locations=2)
    again.load_state_dict({**old, "discrepancy_loss.locations": old.pop("locations")})
    assert torch.equal(again.locations, found)


# ---------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}",
                                         rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial weights on both ranks
        net = torch.nn.Linear(4, 2)
        model = torch.nn.parallel.DistributedDataParallel(net)
        loss_fn = losses.SlicedFGWLoss(beta=0.1, n_projections=8, seed=11)
        g = gen(100 + rank)  # each rank its own data; the loss compares the gathered codes
        codes = model(torch.randn(6, 4, generator=g))
        everyone = [torch.empty_like(codes) for _ in range(world)]
        torch.distributed.all_gather(everyone, codes.detach())
        everyone[rank] = codes  # gradients through this rank's rows
        loss = loss_fn(torch.cat(everyone), torch.randn(6 * world, 2, generator=gen(7)))
        loss.backward()
        values = torch.stack([loss.detach(), net.weight.grad.sum()])
        torch.save(values, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_compute_the_same_loss(tmp_path):
    import torch.multiprocessing as mp

    init, out = tmp_path / "init", tmp_path / "values"
    mp.spawn(_ddp_worker, args=(2, str(init), str(out)), nprocs=2, join=True)
    v0, v1 = (torch.load(f"{out}.{r}", weights_only=True) for r in range(2))
    assert torch.equal(v0, v1)  # same loss, and DDP averaged the same gradient
    # the loss is that of one process holding the whole batch
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    with torch.no_grad():
        codes = torch.cat([net(torch.randn(6, 4, generator=gen(100 + r))) for r in range(2)])
    expected = losses.SlicedFGWLoss(beta=0.1, n_projections=8, seed=11)(
        codes, torch.randn(12, 2, generator=gen(7)))
    assert torch.equal(v0[0], expected)


# ---------------------------------------------------------------------- examples
def _run_example(name: str, timeout: float = 300) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    result = subprocess.run([sys.executable, str(REPO / "examples" / name)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow  # a subprocess: about 12 s of CPU
def test_plain_loop_example_decreases_the_loss():
    lines = [line for line in _run_example("plain_loop.py").splitlines()
             if line.startswith("step")]
    first, last = (float(line.split("loss")[1]) for line in (lines[0], lines[-1]))
    assert last < 0.8 * first


@pytest.mark.slow  # about 10 s of CPU; `lightning` comes with otae[dev]
def test_lightning_example_decreases_the_loss():
    import runpy

    main = runpy.run_path(str(REPO / "examples" / "lightning_module.py"))["main"]
    assert main(40) < 0.8 * main(1)


@pytest.mark.parametrize("kind", ["sw", "sfgw", "mmd", "sinkhorn"])
def test_sample_weights_and_unequal_sizes_reach_the_function(kind):
    g = gen(9)
    x = torch.randn(7, D, generator=g, dtype=torch.float64)
    y = torch.randn(4, D, generator=g, dtype=torch.float64)
    a = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    b = torch.softmax(torch.randn(4, generator=g, dtype=torch.float64), 0)
    module, function = {
        "sw": (losses.SlicedWassersteinLoss(n_projections=5, seed=1),
               lambda **w: sliced_wasserstein(x, y, n_projections=5, generator=gen(1), **w)),
        "sfgw": (losses.SlicedFGWLoss(beta=0.3, n_projections=5, seed=1),
                 lambda **w: sliced_fgw(x, y, beta=0.3, n_projections=5, generator=gen(1), **w)),
        "mmd": (losses.MMDLoss(), lambda **w: mmd(x, y, **w)),
        "sinkhorn": (losses.SinkhornLoss(epsilon=0.5, n_iters=30),
                     lambda **w: sinkhorn(x, y, epsilon=0.5, n_iters=30, **w)),
    }[kind]
    value = module(x, y, a=a, b=b)
    assert value.item() == function(a=a, b=b).item()
    assert value.item() != function().item()  # the weights matter
