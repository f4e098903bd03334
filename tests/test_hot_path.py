"""The training step's hot path: no host syncs, device-side skipping, compiled == eager.

On a GPU every host sync stalls the launch queue, so a training step must make
none (the optimiser's own CPU step counters aside: otae's Adam is fused and has none);
a non-finite step is caught on the device and skipped there; ``training.compile`` runs
each objective as one graph that agrees with eager mode.
"""

from __future__ import annotations

import pytest
import torch

from otae.models import MODELS
from otae.profiling import OpCounter
from otae.training import Trainer

from . import ddp_worker


def _trainer(model: str, tmp_path, configure=None) -> tuple[Trainer, torch.Tensor]:
    config = ddp_worker.tiny_config(model)
    if configure is not None:
        configure(config)
    torch.manual_seed(0)
    data = ddp_worker.images()
    trainer = Trainer.from_config(config, tmp_path, train_data=data, test_data=data, log=lambda m: None)
    return trainer, data.get_batch(torch.arange(ddp_worker.GLOBAL_BATCH))[0]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_training_step_makes_no_host_sync(model, tmp_path):
    trainer, x = _trainer(model, tmp_path)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):  # lazy state: optimiser moments, warm starts
        trainer.step(x, gen)
    with OpCounter() as counts:
        trainer.step(x, gen)
    assert counts.syncs == 0, counts.summary()
    assert counts.ops > 50  # the counter saw the step


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _patch_total(trainer, how):
    loss = trainer.model.loss

    def patched(x, generator=None):
        terms = loss(x, generator)
        return {**terms, "total": how(terms["total"], trainer)}

    trainer.model.loss = patched


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_a_non_finite_step_is_skipped_on_the_device_and_the_skip_is_sticky(
    optimizer, tmp_path
):
    def use(config):
        config.training.optimizer.name = optimizer

    trainer, x = _trainer("drae", tmp_path, use)
    gen = torch.Generator().manual_seed(0)
    trainer.step(x, gen)
    assert trainer.last_step_finite
    params = [p for p in trainer.model.parameters()]
    before = [p.detach().clone() for p in params]
    state_before = {id(p): {k: v.clone() for k, v in s.items()}
                    for p, s in trainer.optimizer.state.items()}
    calls = {"n": 0}

    def nan_once(total, _):
        calls["n"] += 1
        return total * float("nan") if calls["n"] == 1 else total

    _patch_total(trainer, nan_once)
    with OpCounter() as counts:
        trainer.step(x, gen)
    assert counts.syncs == 0
    assert not trainer.last_step_finite and trainer.divergence.diverged()
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    if optimizer == "adam":  # fused Adam skips its state too (moments, step count)
        for p, s in trainer.optimizer.state.items():
            assert all(torch.equal(v, state_before[id(p)][k]) for k, v in s.items())
    # the next step is finite, but the epoch has diverged: still no update
    trainer.step(x, gen)
    assert trainer.last_step_finite
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert trainer.divergence.report()[0] == 1  # the first bad step of the watch
    trainer.divergence.reset()  # a new epoch: updates again
    trainer.step(x, gen)
    assert not all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_a_finite_loss_with_non_finite_gradients_is_not_applied(tmp_path):
    trainer, x = _trainer("vae", tmp_path)
    gen = torch.Generator().manual_seed(0)
    # value 0, gradient 0 * inf = nan: the loss alone would not tell
    _patch_total(trainer, lambda total, t: total + (
        next(t.model.decoder.parameters()).sum() * 0.0).sqrt())
    before = _weights(trainer)
    terms, _ = trainer.step(x, gen)
    assert torch.isfinite(terms["total"])
    assert not trainer.last_step_finite
    after = _weights(trainer)
    changed = [k for k in before if "running" not in k and "num_batches" not in k
               and not torch.equal(before[k], after[k])]
    assert changed == []


def test_divergence_is_reported_once_the_epoch_is_checked(tmp_path):
    from otae.training import NonFiniteLossError

    trainer, _ = _trainer("wae", tmp_path)
    calls = {"n": 0}

    def nan_at_second_batch(total, _):
        calls["n"] += 1
        return total * float("nan") if calls["n"] == 2 else total

    _patch_total(trainer, nan_at_second_batch)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 1: loss is not finite "
                                                 r"\(total=nan, reconstruction="):
        trainer.train_epoch(1)


def _compiled_and_eager(model, tmp_path, backend, configure=None):
    # like for like: compiled steps keep convolutions NCHW (training.memory_format=auto)
    def contiguous(config):
        config.training.memory_format = "contiguous"
        if configure is not None:
            configure(config)

    def compiled(config):
        config.training.compile = True
        config.training.compile_backend = backend
        contiguous(config)

    eager, x = _trainer(model, tmp_path / "eager", contiguous)
    fast, _ = _trainer(model, tmp_path / "compiled", compiled)
    fast.model.load_state_dict(eager.model.state_dict())
    return eager, fast, x


def _objective_and_grads(trainer, x, seed):
    results = []
    for kind in (["critic"] if trainer.model.has_critic else []) + ["loss"]:
        trainer.model.zero_grad(set_to_none=True)
        terms, _ = trainer.backward(x, torch.Generator().manual_seed(seed), kind)
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                 if p.grad is not None}
        results.append(({k: v.detach() for k, v in terms.items()}, grads))
    return results


def _assert_close(compiled, eager, rtol, resolution=None):
    """Terms within ``rtol``; each gradient within ``rtol`` of its largest entry, or within
    4x ``resolution[i][name]`` (what a one-ulp change of the input moves it by in eager
    float32) where that is larger: a kernel that only reorders float32 arithmetic cannot
    be asked to agree beyond the computation's own float32 resolution."""
    for i, ((terms_c, grads_c), (terms_e, grads_e)) in enumerate(
        zip(compiled, eager, strict=True)
    ):
        for key, value in terms_e.items():
            assert torch.allclose(terms_c[key], value, rtol=rtol, atol=rtol * 1e-3), key
        assert grads_c.keys() == grads_e.keys()
        # a gradient that is a near-cancelling sum carries the rounding of its summands,
        # not of its value: GWAE's critic output bias gets +1 and -1 from the W estimate
        # (per unit of the objective) and only the drift term's ~1e-4 is left, so it is
        # known to a few float32 ulps of 1, whatever the kernel order
        unit_ulps = 4 * torch.finfo(torch.float32).eps
        for name, grad in grads_e.items():
            tolerance = (rtol * grad.abs().max().clamp_min(1e-12)).clamp_min(unit_ulps)
            if resolution is not None:
                tolerance = torch.maximum(tolerance, 4.0 * resolution[i][name])
            assert (grads_c[name] - grad).abs().max() <= tolerance, name


def _float32_resolution(trainer, x, seed, draws=2):
    """Per (objective, parameter): the largest change of the eager gradient when every
    input pixel moves by about one float32 ulp (a fixed generator; same draws as ``seed``).

    Well-conditioned objectives move by ~1e-7 relative; SAE's Sinkhorn gradient at a
    small epsilon moves by ~2e-4 (measured), so it sets its own tolerance. Every call
    starts from the model's state on entry (warm starts are buffers), and leaves it so."""
    import copy

    state = copy.deepcopy(trainer.model.state_dict())

    def evaluate(inputs):
        trainer.model.load_state_dict(state)
        return _objective_and_grads(trainer, inputs, seed)

    base = evaluate(x)
    generator = torch.Generator().manual_seed(1234)
    worst = [{name: torch.zeros(()) for name in grads} for _, grads in base]
    for _ in range(draws):
        nudged = x * (1 + 2.0**-23 * torch.randn(x.shape, generator=generator))
        for i, (_, grads) in enumerate(evaluate(nudged)):
            for name, grad in grads.items():
                change = (grad - base[i][1][name]).abs().max()
                worst[i][name] = torch.maximum(worst[i][name], change)
    trainer.model.load_state_dict(state)
    return worst


def _check_compiled_matches_eager(model, tmp_path, backend, rtol, configure=None):
    import torch._dynamo

    torch._dynamo.reset()
    eager, fast, x = _compiled_and_eager(model, tmp_path, backend, configure)
    # first call: eager, recording the draws (spherical models: again once the search
    # has a warm start); then the compiled graph, with fresh noise each time
    for seed in (1, 2, 3):
        resolution = _float32_resolution(eager, x, seed) if backend == "inductor" else None
        expected = _objective_and_grads(eager, x, seed)
        _assert_close(_objective_and_grads(fast, x, seed), expected, rtol, resolution)
    assert fast._runner.compiled_calls >= 1


@pytest.mark.parametrize("model", sorted(MODELS))
def test_compiled_objective_matches_eager_with_no_graph_break(model, tmp_path):
    """aot_eager: AOTAutograd's traced forward and backward, run op by op (fast to build).
    fullgraph=True makes any graph break an error."""
    _check_compiled_matches_eager(model, tmp_path, "aot_eager", 1e-5)


def _authors_nets(config):
    """GWAE on the authors' nets (no batch norm): its critic steps decode prior samples
    alone, another path through the step than the batch-normalised tiny net's."""
    config.network.architecture = "gwae_conv"
    config.network.options = {"channels": [4, 8], "hidden": 16}


def test_gwae_on_the_authors_nets_syncs_nowhere_and_compiles_whole(tmp_path):
    trainer, x = _trainer("gwae", tmp_path / "eager", _authors_nets)
    assert not trainer.model.decoder_mixes_batch()
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        trainer.step(x, gen)
    with OpCounter() as counts:
        trainer.step(x, gen)
    assert counts.syncs == 0, counts.summary()
    _check_compiled_matches_eager("gwae", tmp_path / "compiled", "aot_eager", 1e-5, _authors_nets)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS))
def test_inductor_compiled_objective_matches_eager(model, tmp_path):
    """inductor (the default backend): generated kernels agree to float32 rounding."""
    _check_compiled_matches_eager(model, tmp_path, "inductor", 1e-5)


@pytest.mark.parametrize(
    ("backend", "mode", "expected"),
    [
        ("inductor", "default", {"options": {"layout_optimization": False}}),
        ("inductor", "reduce-overhead",
         {"options": {"triton.cudagraphs": True, "layout_optimization": False}}),
        ("inductor", "max-autotune-no-cudagraphs",
         {"options": {"max_autotune": True, "coordinate_descent_tuning": True,
                      "layout_optimization": False}}),
        ("aot_eager", "default", {}),
    ],
)  # fmt: skip
def test_compile_options_keep_convolutions_in_nchw(backend, mode, expected):
    # channels-last layouts broke the paper nets' ConvTranspose2d backward under inductor
    # on CUDA (pytorch#171622); the mode's own options are kept (torch.compile takes
    # `mode` or `options`, never both)
    from otae.training.compiled import compile_options

    options = compile_options(backend, mode)
    assert options == {"backend": backend, "fullgraph": True, "dynamic": False, **expected}
    assert "mode" not in options


@pytest.mark.slow
def test_inductor_conv_transpose_chain_backward_matches_eager():
    # the shape of the paper decoder's failure on an H200, checked where inductor runs here
    from otae.training.compiled import compile_options

    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),
    )  # fmt: skip
    x = torch.randn(4, 16, 7, 7, generator=g)

    def loss(inputs):
        return net(inputs).square().sum()

    eager = torch.autograd.grad(loss(x), list(net.parameters()))
    compiled = torch.compile(loss, **compile_options("inductor", "default"))
    grads = torch.autograd.grad(compiled(x), list(net.parameters()))
    for a, b in zip(grads, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
