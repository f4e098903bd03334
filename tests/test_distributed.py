"""Data-parallel training: 2 gloo processes under torchrun equal 1 process at the same batch.

The multi-process tests launch ``python -m torch.distributed.run --standalone
--nproc_per_node=2`` (torchrun) on CPU with the gloo backend, as a user would.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from otae.parallel import BatchShards, GlobalBatchNorm, convert_batchnorm, local_batches
from otae.training import Trainer, load_config
from otae.training.seeding import EpochSampler, derived_seed

from . import ddp_worker
from .helpers import history_rows, torchrun

REPO = Path(__file__).resolve().parents[1]
ALL_MODELS = [
    "vae", "wae", "swae", "gmvae", "vampprior", "prae", "drae",
    "ssfg", "mssfg", "pssfg", "maxsfg", "gwae", "sae", "betatcvae", "factorvae",
]  # fmt: skip


def _max_rel(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    scale = max(float(b.double().abs().max()), floor) + 1e-12
    return float((a.double() - b.double()).abs().max() / scale)


# ---------------------------------------------------------------------- one process
def test_shards_split_and_scale_the_batch():
    shards = BatchShards(world_size=3, rank=1)
    rows = torch.arange(12).view(6, 2)
    assert shards.gathers and shards.global_rows(2) == 6 and shards.sum_scale == 3
    assert shards.local_rows(rows).tolist() == [[2, 3], [8, 9]]
    per_rank = BatchShards(world_size=3, rank=1, mode="per_rank")
    assert per_rank.active and not per_rank.gathers
    assert per_rank.global_rows(2) == 2 and per_rank.local_rows(rows) is rows
    single = BatchShards()
    assert not single.active and single.sum_scale == 1 and single.gather(rows) is rows
    with pytest.raises(ValueError, match="per_rank"):
        BatchShards(2, 0, mode="everything")
    with pytest.raises(ValueError, match="rank 2"):
        BatchShards(2, 2)


def test_epoch_sampler_one_process_keeps_the_seeded_order():
    sampler = EpochSampler(10, seed=7)
    sampler.set_epoch(3)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(derived_seed(7, 3, 1)))
    assert list(sampler) == expected.tolist()


@pytest.mark.parametrize("n, world", [(12, 2), (12, 3), (11, 2), (13, 4)])
def test_epoch_sampler_ranks_interleave_into_the_global_batches(n, world):
    """Rank r's k-th batch of B/W rows = rows r, r+W, ... of the one-process k-th batch."""
    batch = 2 * world
    one = list(EpochSampler(n, seed=1))
    ranks = [list(EpochSampler(n, world, r, seed=1)) for r in range(world)]
    assert all(len(r) == len(ranks[0]) for r in ranks)
    padded = one + one[: len(ranks[0]) * world - n]  # DistributedSampler's padding rule
    for k in range(0, len(ranks[0]), batch // world):
        rows = [r[k : k + batch // world] for r in ranks]
        interleaved = [rows[r][j] for j in range(len(rows[0])) for r in range(world)]
        start = k * world
        assert interleaved == padded[start : start + len(interleaved)]


def test_global_batch_norm_without_ranks_is_batch_norm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.BatchNorm1d(12))
    reference = nn.Sequential(*[m for m in net])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    converted = convert_batchnorm(
        nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.BatchNorm1d(12)),
        BatchShards(),
    )
    converted.load_state_dict(state)
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[3], GlobalBatchNorm)
    assert list(converted.state_dict()) == list(state)
    x = torch.randn(5, 2, 4, 4)
    torch.testing.assert_close(converted(x), reference(x))
    torch.testing.assert_close(converted.state_dict(), reference.state_dict())
    converted.eval(), reference.eval()
    torch.testing.assert_close(converted(x), reference(x))


def test_global_batch_norm_two_pass_statistics_match_batch_norm(monkeypatch):
    """With active shards (collectives faked for one rank holding the whole batch)."""
    shards = BatchShards(world_size=2, rank=0)
    monkeypatch.setattr(BatchShards, "sum_over_ranks", lambda self, t: 2 * t)
    bn = GlobalBatchNorm(3, shards, momentum=0.3)
    reference = nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        for m in (bn, reference):
            m.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
            m.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64).mul(3).add(10).float()
    # two ranks each holding x: global mean and biased variance are those of x
    torch.testing.assert_close(bn(x), reference(x))
    torch.testing.assert_close(bn.running_mean, reference.running_mean)
    n = x.numel() // 3
    unbiased_two = x.var(dim=(0, 2, 3), unbiased=False) * (2 * n) / (2 * n - 1)
    torch.testing.assert_close(bn.running_var, 0.7 + 0.3 * unbiased_two)
    with local_batches(nn.Sequential(bn)):
        assert not shards.active
    assert shards.active


def test_new_training_options_are_validated():
    for key, value, message in [
        ("precision", "fp8", "precision"),
        ("regulariser_mode", "sometimes", "regulariser_mode"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_config("mnist/drae-quick", [f"training.{key}={value}"])


def test_batch_must_split_evenly_over_processes(monkeypatch, tmp_path):
    from otae.training import Trainer, distributed

    monkeypatch.setattr(distributed, "world", lambda: (3, 0))
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        Trainer.from_config(
            ddp_worker.tiny_config("drae"),
            tmp_path,
            train_data=ddp_worker.images(),
            test_data=ddp_worker.images(),
        )


# ---------------------------------------------------------------------- two processes
@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "global.pt"
    torchrun([str(REPO / "tests" / "ddp_worker.py"), str(out), "global", *ALL_MODELS], out.parent)
    return torch.load(out, weights_only=True)


def test_process_group_is_released_at_the_end_of_a_session(two_process_results):
    """After every model's DDP steps and global-batch gathers, leaving the session frees
    gloo's threads: none may live on into interpreter shutdown, where they raced the
    teardown and aborted workers now and then (SIGABRT, "terminate called without an
    active exception")."""
    assert any("gloo" in name for name in two_process_results["_backend_threads_during"])
    assert two_process_results["_backend_threads_after"] == []


@pytest.mark.parametrize("model", ALL_MODELS)
def test_two_processes_equal_one_process_at_the_same_global_batch(model, two_process_results):
    """Loss terms, every parameter gradient (critic included), one epoch's logged means and
    the state after its two steps (weights, batch-norm statistics, search locations)."""
    two = two_process_results[model]
    assert two_process_results["_world"] == (2, 0)
    torch.set_num_threads(1)
    one = ddp_worker.run_case(model)
    assert two["finite"] and one["finite"]
    for key, value in one["terms"].items():
        assert two["terms"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert set(two["grads"]) == set(one["grads"]) and one["grads"]
    # a gradient that cancels to nearly zero holds float32 rounding of summands at the
    # model's scale: compare every gradient at no less than 1 % of the largest one
    floor = 1e-2 * max(float(g.abs().max()) for g in one["grads"].values())
    for name, grad in one["grads"].items():
        assert _max_rel(two["grads"][name], grad, floor) < 1e-3, name
    critic_grads = one.get("critic_grads", {})
    # (the critic's output bias cancels out of its estimate: only the small drift term
    # reaches it, so it too is compared at the critic's gradient scale)
    floor = 1e-2 * max((float(g.abs().max()) for g in critic_grads.values()), default=0.0)
    for name, grad in critic_grads.items():
        assert _max_rel(two["critic_grads"][name], grad, floor) < 1e-4, name
    for key, value in one["epoch"].items():
        assert two["epoch"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for key, value in one["state"].items():
        if value.is_floating_point():
            assert _max_rel(two["state"][key], value) < 1e-3, key
        else:
            assert torch.equal(two["state"][key], value), key


def _one_process_on_rows(model: str, rank: int, world: int = 2) -> dict:
    """What rank ``rank`` of ``world`` computes in per_rank mode, redone in one process: the
    loss terms of its rows alone (``rank::world`` of the global batch; batch norm on them
    alone) with the same draws, and its objective and that objective's gradient: its rows'
    mean SSE (reduction "mean") or SSE summed and scaled by ``world`` ("sum"), plus gamma
    times its own regulariser."""
    data = ddp_worker.images()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer.from_config(
            ddp_worker.tiny_config(model), run_dir, train_data=data, test_data=data,
            log=lambda m: None,
        )
    config = trainer.config.model
    x = data.get_batch(torch.arange(ddp_worker.GLOBAL_BATCH))[0][rank::world]
    terms = trainer.model.loss(x, torch.Generator().manual_seed(123))
    rows = world * x.shape[0] if config.reduction == "sum" else 1
    objective = rows * terms["reconstruction"] + config.gamma * terms["regulariser"]
    objective.backward()
    named = trainer.model.named_parameters()
    return {
        "terms": {k: float(v.detach()) for k, v in terms.items() if k != "total"},
        "objective": float(objective.detach()),
        "grads": {n: p.grad.clone() for n, p in named if p.grad is not None},
    }


def test_per_rank_mode_is_a_different_objective(tmp_path):
    """per_rank regularises each rank's rows alone (and batch norm is per rank): the logged
    terms are the means over ranks, and the gradients the average, of each rank's rows
    computed alone in one process; so D-RAE's batch-level term is no longer the
    one-process term at the same global batch."""
    out = tmp_path / "per_rank.pt"
    torchrun([str(REPO / "tests" / "ddp_worker.py"), str(out), "per_rank", "drae"], tmp_path)
    per_rank = torch.load(out, weights_only=True)["drae"]
    torch.set_num_threads(1)
    ranks = [_one_process_on_rows("drae", rank) for rank in range(2)]
    assert per_rank["finite"] and all(map(math.isfinite, per_rank["epoch"].values()))
    expected = {k: sum(r["terms"][k] for r in ranks) / 2 for k in ranks[0]["terms"]}
    expected["total"] = sum(r["objective"] for r in ranks) / 2
    assert per_rank["terms"].keys() == expected.keys()
    for key, value in expected.items():
        assert per_rank["terms"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert per_rank["grads"].keys() == ranks[0]["grads"].keys()
    average = {n: (ranks[0]["grads"][n] + ranks[1]["grads"][n]) / 2 for n in ranks[0]["grads"]}
    floor = 1e-2 * max(float(g.abs().max()) for g in average.values())
    for name, grad in average.items():
        assert _max_rel(per_rank["grads"][name], grad, floor) < 1e-3, name
    one = ddp_worker.run_case("drae")
    assert abs(per_rank["terms"]["regulariser"] - one["terms"]["regulariser"]) > 1e-3 * abs(
        one["terms"]["regulariser"]
    )


@pytest.mark.parametrize("model", ["drae", "vae"])
def test_a_nan_on_one_rank_stops_every_rank_together(model, tmp_path):
    """Rank 0's own loss is finite, rank 1's is not: rank 0 must not step (nor wait for a
    backward pass that rank 1 skips)."""
    out = tmp_path / "nan.pt"
    torchrun([str(REPO / "tests" / "ddp_worker.py"), str(out), "nan", model], tmp_path)
    rank0 = torch.load(out, weights_only=True)[model]
    assert rank0["local_total_finite"]
    assert not rank0["stepped"] and rank0["weights_unchanged"]


def test_a_failure_on_rank_0_at_the_end_of_an_epoch_stops_every_rank(tmp_path):
    """Rank 0 alone evaluates and writes checkpoints; if that fails (disk full, a held-out
    divergence), the other ranks must not wait for it in a collective: they stop too."""
    out = tmp_path / "failure.pt"
    torchrun([str(REPO / "tests" / "ddp_worker.py"), str(out), "end_epoch_failure", "drae"], tmp_path)
    rank0 = torch.load(out, weights_only=True)["drae"]
    rank1 = torch.load(f"{out}.rank1", weights_only=True)["drae"]
    assert rank0["error"] == "OSError" and "planted" in rank0["message"]
    assert rank1["error"] == "RunStoppedOnAnotherRank" and "epoch 1" in rank1["message"]
    assert rank0["epoch"] == rank1["epoch"] == 1  # both stopped after the first epoch


def test_torchrun_cli_trains_resumes_and_matches_one_process(tmp_path):
    from otae.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "base: mnist/drae-quick\n"
        "network: {options: {channels: [4, 8], hidden: 16}}\n"
        "data: {train_subset: 200, test_subset: 100}\n"
        "training: {batch_size: 50, epochs: 2, progress: false, tensorboard: false,"
        " device: cpu}\n"
        "evaluation: {report: true, timing_steps: 2, latent_points: 100}\n"
    )
    two = tmp_path / "two"
    torchrun(
        ["-m", "otae", "train", str(config), "training.epochs=1", "--run-dir", str(two)], tmp_path
    )
    assert (two / "checkpoints" / "last.pt").is_file() and len(history_rows(two)) == 1
    result = torchrun(
        ["-m", "otae", "train", str(config), "--resume", "--run-dir", str(two)], tmp_path
    )
    assert result.stdout.count("run directory:") == 1  # rank 0 alone reports
    one = tmp_path / "one"
    assert main(["train", str(config), "--run-dir", str(one)]) == 0
    rows_two, rows_one = history_rows(two), history_rows(one)
    assert len(rows_two) == len(rows_one) == 2
    for row_two, row_one in zip(rows_two, rows_one, strict=True):
        for key in ("train_total", "train_reconstruction", "test_rec_loss", "test_total"):
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-4), key
    metrics = (two / "metrics.json").read_text()
    assert '"processes": 2' in metrics and '"regulariser_share"' in metrics
    assert (two / "report.html").is_file()


# ---------------------------------------------------------------------- fast steps
@pytest.mark.parametrize("model", ["drae", "prae", "sae", "gwae"])
def test_bf16_autocast_keeps_the_ot_terms_in_float32(model, monkeypatch, tmp_path):
    """Under bf16 autocast the networks run in bf16 but every regulariser input and loss
    term is float32, and the loss stays close to the float32 loss."""
    from otae.models.gwae import relational_gw_loss
    from otae.training import Trainer

    seen: list[torch.dtype] = []
    if model == "gwae":
        import otae.models.gwae as gwae_module

        def spy(z, x, nu, **kw):
            seen.extend([z.dtype, x.dtype])
            return relational_gw_loss(z, x, nu, **kw)

        monkeypatch.setattr(gwae_module, "relational_gw_loss", spy)
    data = ddp_worker.images()
    results = {}
    for precision in ("fp32", "bf16"):
        config = ddp_worker.tiny_config(model)
        config.training.precision = precision
        torch.manual_seed(0)
        trainer = Trainer.from_config(config, tmp_path, train_data=data, test_data=data)
        if model != "gwae":
            original = trainer.model.regulariser

            def recording(x, mean, logvar, z, generator, original=original):
                seen.extend(t.dtype for t in (mean, z) if t is not None)
                return original(x, mean, logvar, z, generator)

            trainer.model.regulariser = recording
        x = data.get_batch(torch.arange(8))[0]
        terms, finite = trainer.backward(x, torch.Generator().manual_seed(0))
        assert finite and all(t.dtype == torch.float32 for t in terms.values())
        results[precision] = {k: v.detach() for k, v in terms.items()}
    assert seen and set(seen) == {torch.float32}
    for key in ("reconstruction", "regulariser"):
        assert float(results["bf16"][key]) == pytest.approx(float(results["fp32"][key]), rel=0.1)
    # the networks did run in bf16: the results are not bit-identical
    assert float(results["bf16"]["reconstruction"]) != float(results["fp32"]["reconstruction"])


@pytest.mark.parametrize("model", ["drae", "prae", "sae", "gwae"])
def test_bf16_autocast_runs_the_ot_term_in_float32(model, tmp_path):
    """The OT term inside a bf16-autocast step (its inputs come from bf16 networks) is
    float32 of float32 inputs and equals, to float32 rounding (1e-6), the term recomputed
    outside autocast on the SAME inputs and noise. The term computed in bf16 (inputs
    rounded to bf16, under autocast) differs by more than 1e-4 of its value, so the
    comparison would catch an OT term that ran in bf16."""
    from otae.training import Trainer

    config = ddp_worker.tiny_config(model)
    config.training.precision = "bf16"
    torch.manual_seed(0)
    data = ddp_worker.images()
    trainer = Trainer.from_config(config, tmp_path, train_data=data, test_data=data)
    name = "gw_term" if model == "gwae" else "regulariser"
    original = getattr(trainer.model, name)
    calls = []

    def spy(*args):
        *tensors, generator = args if name == "regulariser" else (*args, None)
        state = None if generator is None else generator.get_state()
        out = original(*args)
        value = out[0] if name == "regulariser" else out
        calls.append(([None if t is None else t.detach().clone() for t in tensors], state, value))
        return out

    setattr(trainer.model, name, spy)
    x = data.get_batch(torch.arange(8))[0]
    trainer.backward(x, torch.Generator().manual_seed(0))
    inputs, state, value = calls[0]
    assert all(t.dtype == torch.float32 for t in inputs if t is not None and t.is_floating_point())

    def again(autocast: bool):
        # bf16: the inputs rounded to bf16 as well (what the networks emit); GWAE's term
        # (cdist, a float32 op under autocast) takes them as bf16 tensors instead
        rounded = (lambda t: t.bfloat16()) if model == "gwae" else (lambda t: t.bfloat16().float())
        args = [rounded(t) if autocast and t is not None else t for t in inputs]
        if state is not None:
            args.append(torch.Generator().set_state(state))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = original(*args)
        return (out[0] if name == "regulariser" else out).float()

    fp32, bf16 = again(False), again(True)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.detach(), fp32, rtol=1e-6, atol=1e-7)
    assert (bf16 - fp32).abs().max() > 1e-4 * fp32.abs().max(), (bf16, fp32)


@pytest.mark.slow
def test_compiled_networks_train_like_eager_ones(tmp_path):
    """training.compile=true (needs a C compiler for the CPU backend): same loss, same
    parameter names, the same gradient of every parameter and the same weights and
    batch-norm statistics after two optimiser steps as eager networks."""
    from otae.training import Trainer

    data = ddp_worker.images()
    losses, grads, states = {}, {}, {}
    for compiled in (False, True):
        config = ddp_worker.tiny_config("drae")
        config.training.compile = compiled
        torch.manual_seed(0)
        trainer = Trainer.from_config(config, tmp_path, train_data=data, test_data=data)
        losses[compiled], grads[compiled] = [], []
        for step in range(2):
            x = data.get_batch(torch.arange(8 * step, 8 * step + 8))[0]
            terms, _ = trainer.step(x, torch.Generator().manual_seed(step))
            losses[compiled].append(float(terms["total"]))
            grads[compiled].append(
                {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
            )
        states[compiled] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert list(states[True]) == list(states[False])
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    for eager, compiled in zip(grads[False], grads[True], strict=True):
        assert eager.keys() == compiled.keys() and len(eager) > 4
        largest = max(float(g.abs().max()) for g in eager.values())
        for name, g in eager.items():
            torch.testing.assert_close(compiled[name], g, rtol=1e-3, atol=1e-4 * largest)
    moved = 0
    initial = Trainer.from_config(ddp_worker.tiny_config("drae"), tmp_path, train_data=data, test_data=data)
    for name, value in states[False].items():
        torch.testing.assert_close(states[True][name], value, rtol=1e-4, atol=1e-6)
        moved += not torch.equal(value, initial.model.state_dict()[name])
    assert moved > 4  # the steps did change the weights being compared
