"""Every failure a user can provoke from the command line: one `otae: error:` line, exit 2.

Each test runs `otae.cli.main` in-process on tiny data and checks the project rule: bad
input (config, data files, options) or a diverging run gives exactly one stderr line
`otae: error: ...` naming the culprit, exit status 2, no traceback, and nothing lost.
"""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch

from otae.cli import main
from otae.training import Trainer, load_checkpoint

from .helpers import TINY, one_error_line, write_idx


# ---------------------------------------------------------------------- divergence
def _plant_divergence(monkeypatch, model_name: str, epoch: int, batch: int) -> None:
    """At batch ``batch`` of epoch ``epoch``, parameters go NaN, as after a huge update.

    Models with a learnable prior get NaN prior parameters only (the report must say
    where the NaN weights are, not only that the loss is NaN); the others get NaN
    encoder weights.
    """
    original = Trainer.step
    seen = {"n": 0}

    def step(self, x, generator, regularise=True):
        if self.epoch == epoch - 1 and regularise:  # self.epoch: completed epochs
            if seen["n"] == batch:
                prior = list(self.model.prior.parameters())
                params = prior if prior else list(self.model.encoder.parameters())
                with torch.no_grad():
                    for p in params:
                        p.fill_(math.nan)
            seen["n"] += 1
        return original(self, x, generator, regularise)

    monkeypatch.setattr(Trainer, "step", step)


@pytest.mark.parametrize("model", ["vae", "drae", "gmvae", "wae"])
def test_divergence_is_one_line_and_keeps_the_last_good_epoch(model, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / model
    _plant_divergence(monkeypatch, model, epoch=2, batch=1)
    args = ["train", f"mnist/{model}-quick", "training.epochs=2", *TINY, "--run-dir", str(run_dir)]
    assert main(args) == 2
    line = one_error_line(
        capsys, "epoch 2, batch 1", "lower training.optimizer.lr", "checkpoints of epoch 1"
    )
    assert "finite" in line
    # the report names the terms of the first bad batch and where the NaN weights are
    assert "loss is not finite (total=nan" in line
    broken = "prior" if model in ("drae", "gmvae") else "encoder"
    assert f"the {broken} parameters are no longer finite" in line
    for name in ("last.pt", "best.pt"):  # epoch 1's checkpoints, intact
        state = load_checkpoint(run_dir / "checkpoints" / name)
        assert state["epoch"] == 1
        assert all(
            torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
        )
    # the fix the message names: resume the run with a lower learning rate
    monkeypatch.undo()
    assert main(["train", str(run_dir), "training.optimizer.lr=1e-4", "--no-report"]) == 0
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] == 2
    assert {g["lr"] for g in state["optimizer"]["param_groups"]} == {1e-4}


def test_divergence_at_the_end_of_an_epoch_keeps_the_previous_checkpoint(
    tmp_path, capsys, monkeypatch
):
    # the last batch of epoch 2 leaves NaN weights behind: its evaluation notices,
    # before epoch 2 overwrites epoch 1's checkpoints
    run_dir = tmp_path / "vae"
    original = Trainer.step
    steps = {"n": 0}

    def step(self, x, generator, regularise=True):
        out = original(self, x, generator, regularise)
        steps["n"] += 1
        if steps["n"] == 8:  # 4 batches per epoch: the last one of epoch 2
            with torch.no_grad():
                next(self.model.decoder.parameters()).fill_(math.nan)
        return out

    monkeypatch.setattr(Trainer, "step", step)
    args = ["train", "mnist/vae-quick", "training.epochs=2", *TINY, "--run-dir", str(run_dir)]
    assert main(args) == 2
    one_error_line(capsys, "epoch 2, after its last batch", "lower training.optimizer.lr")
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1


def test_a_real_learning_rate_divergence(tmp_path, capsys):
    run_dir = tmp_path / "vae"
    args = ["train", "mnist/vae-quick", "training.optimizer.lr=1e6", "training.epochs=2", *TINY]
    assert main([*args, "--run-dir", str(run_dir)]) == 2
    one_error_line(capsys, "epoch 1, batch", "lower training.optimizer.lr", "no epoch completed")


# ---------------------------------------------------------------------- damaged data
def _idx_set(root, n_test: int = 32):
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)),
                  compress=True)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n), compress=True)
    return root


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x01  # inside the CRC-32 of the gzip trailer
    path.write_bytes(bytes(data))


def _not_gzip(path):
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # the gzip magic number
    path.write_bytes(bytes(data))


def _rewrite(change):
    def damage(path):
        path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))

    return damage


@pytest.mark.parametrize(
    "damage, needle",
    [
        (_truncate, "is truncated: its gzip data ends early"),
        (_flip_a_bit, "is corrupt: damaged gzip data (CRC check failed)"),
        (_not_gzip, "is not gzip data although named .gz"),
        (_rewrite(lambda d: b"\x07" + d[1:]), "is not an IDX file (bad magic number)"),
        (_rewrite(lambda d: d[:-5]), "is truncated: its IDX header announces shape (32,)"),
        (_rewrite(lambda d: d + b"\x00"), "is longer than its header says"),
        (_rewrite(lambda d: d[:4] + (31).to_bytes(4, "big") + d[8:-1]), "expected 32 labels"),
    ],
    ids=["truncated", "crc", "not-gzip", "magic", "short-payload", "long-payload", "count"],
)
def test_damaged_idx_file_is_named(damage, needle, tmp_path, capsys):
    root = _idx_set(tmp_path / "idx")
    damage(root / "t10k-labels-idx1-ubyte.gz")
    args = ["train", "mnist/vae-quick", "data.name=idx", f"data.root={root}", *TINY]
    assert main([*args, "--run-dir", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "t10k-labels-idx1-ubyte.gz", needle)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_damaged_image_in_an_image_folder_is_named(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        noise = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / f"{i}.png")
    (root / "3.png").write_bytes((root / "3.png").read_bytes()[:60])  # cut short
    args = ["train", "mnist/vae-quick", "data.name=image_folder", f"data.root={root}", *TINY]
    args += ["data.train_subset=null", "data.test_subset=null"]
    assert main([*args, "--run-dir", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "3.png: cannot read this image file, it is damaged")


def test_celeba_partition_file_that_is_not_text_is_named(tmp_path, capsys):
    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "list_eval_partition.txt").write_bytes(b"\xff\xfe\x00\x01")
    args = ["train", "mnist/vae-quick", "data.name=celeba", f"data.root={tmp_path}", *TINY]
    assert main([*args, "--run-dir", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "list_eval_partition.txt is not a text file")


# ---------------------------------------------------------------------- configs
CONFIG_FILES = {
    "syntax": ("model: {name: vae\n  x: [", "is not valid YAML: expected ',' or '}'", "line 2"),
    "list": ("- model\n- training\n", "must contain a mapping of sections", "got a list"),
    "missing-base": ("base: nothere.yaml\nmodel: {name: vae}\n", "'nothere.yaml' not found"),
    "base-not-a-name": ("base: 3\nmodel: {name: vae}\n", "base must be the path or name"),
    "cycle": ("base: bad.yaml\nmodel: {name: vae}\n", "config inheritance cycle"),
    "model-not-mapping": ("model: [vae]\n", "model: expected a mapping"),
    "not-utf8": (b"\xff\xfe\x00model", "is not a YAML text file (not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_bad_config_file_is_named(case, tmp_path, capsys):
    content, *needles = CONFIG_FILES[case]
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys, *needles)
    if case != "model-not-mapping":
        assert "bad.yaml" in line or "nothere.yaml" in line


@pytest.mark.parametrize(
    "override, needle",
    [
        ("training.epochs=abc", "training.epochs: expected an integer, got 'abc'"),
        ("training.optimizer.lr=.nan", "training.optimizer.lr must be finite and > 0"),
        ("training.optimizer.betas=[0.5]", "training.optimizer.betas: expected 2 values"),
        ("training.optimizer.betas=[0.5, 1.5]", "training.optimizer.betas must both lie in"),
        ("training.optimizer.weight_decay=-1", "training.optimizer.weight_decay must be"),
        ("training.seed=99999999999999999999999", "training.seed must fit in 64 bits"),
        ("training.device=banana", "training.device='banana' is not a device"),
        ("model=3", "model: expected a mapping"),
    ],
)
def test_bad_value_is_named(override, needle, tmp_path, capsys):
    args = ["train", "mnist/vae-quick", override, "--run-dir", str(tmp_path / "run")]
    assert main(args) == 2
    one_error_line(capsys, needle)


def test_run_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert main(["train", "mnist/vae-quick", *TINY, "--run-dir", str(path)]) == 2
    one_error_line(capsys, f"{path}: file exists")


# ---------------------------------------------------------------------- eval, sample, checkpoints
@pytest.mark.parametrize(
    "args, needle",
    [
        (["eval", "{run}", "--device", "banana"], "--device='banana' is not a device"),
        (["eval", "{run}", "--fid", "-5"], "--fid must be >= 0, got -5"),
        (["sample", "{run}", "--device", "tpu:x"], "--device='tpu:x' is not a device"),
        (["sample", "{run}", "--seed", "-1"], "--seed must be >= 0"),
        (["sample", "{run}", "--component", "1"], "component index k=1 out of range"),
    ],
)
def test_bad_eval_and_sample_options(vae_run, args, needle, capsys):
    assert main([a.format(run=vae_run) for a in args]) == 2
    one_error_line(capsys, needle)


def _copy_run(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy, copy / "checkpoints" / "last.pt"


def test_incomplete_checkpoint_is_named(vae_run, tmp_path, capsys):
    copy, last = _copy_run(vae_run, tmp_path)
    state = torch.load(last, weights_only=True)
    del state["config"]
    torch.save(state, last)
    assert main(["sample", str(copy)]) == 2
    one_error_line(capsys, "last.pt is incomplete (it lacks config)")
    del state["optimizer"]
    torch.save(state, last)
    assert main(["train", str(copy)]) == 2  # resume
    one_error_line(capsys, "last.pt is incomplete (it lacks optimizer)")


def test_resume_with_another_architecture_is_refused_by_name(vae_run, tmp_path, capsys):
    copy, _ = _copy_run(vae_run, tmp_path)
    assert main(["train", str(copy), "model.latent_dim=3"]) == 2
    one_error_line(capsys, "cannot resume", "model.latent_dim")


def test_weights_of_another_architecture_name_the_mismatch(vae_run, tmp_path, capsys):
    """A checkpoint whose config matches but whose weights do not (edited by hand)."""
    copy, last = _copy_run(vae_run, tmp_path)
    state = torch.load(last, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.ndim == 2)
    state["model"][name] = torch.zeros(3, 3)
    torch.save(state, last)
    assert main(["train", str(copy)]) == 2
    one_error_line(capsys, "does not match this model's architecture", "size mismatch for")


# ---------------------------------------------------------------------- bench, multiview
@pytest.mark.parametrize(
    "args, needle",
    [
        (["bench", "nosuchset"], "bench set 'nosuchset' not found"),
        (["bench", "mnist-quick", "--models", "FOO"], "--models ['FOO'] matches none"),
        (["bench", "mnist-quick", "--seeds", "a,b"], "--seeds must be comma-separated integers"),
        (["bench", "{tmp}/bad.yaml"], "bad.yaml is not valid YAML"),
    ],
)
def test_bad_bench_arguments(args, needle, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("runs: [")
    args = [a.format(tmp=tmp_path) for a in args]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, needle)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--views", "a,zz"], "'zz'"),
        (["--seeds", "abc"], "--seeds must be a count N >= 1"),
        (["--seeds", "0"], "--seeds must be a count N >= 1"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--latent-dim", "0"], "--latent-dim must be >= 1, got 0"),
        (["--tau", "2"], "--tau must lie in [0, 1]"),
        (["--gamma", "-1"], "--gamma must be finite and >= 0, got -1.0"),
        (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
        (["--grid"], "--grid needs at least one --sweep"),
        (["--sweep", "depth=1,2"], "unknown sweep factor"),
        (["--sweep", "tau=0,0.5", "--sweep", "tau=1"], "--sweep tau is given twice"),
    ],
)
def test_bad_multiview_arguments(views_npz, args, needle, tmp_path, capsys):
    argv = ["multiview", "--data", str(views_npz), *args, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    one_error_line(capsys, needle)


def test_damaged_multiview_file_is_named(tmp_path, capsys):
    path = tmp_path / "views.npz"
    path.write_bytes(b"PK\x03\x04 cut short")
    assert main(["multiview", "--data", str(path), "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, "views.npz is not a readable numpy .npz file")


# ---------------------------------------------------------------------- internal errors
def test_a_bug_is_one_internal_error_line_and_otae_debug_shows_the_traceback(monkeypatch, capsys):
    import otae.cli

    def broken(args):
        raise TypeError("unsupported operand\nsecond line")

    monkeypatch.setattr(otae.cli.listing, "run", broken)
    monkeypatch.delenv("OTAE_DEBUG", raising=False)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("otae: internal error: TypeError: unsupported operand; second line")
    assert "OTAE_DEBUG=1" in err
    monkeypatch.setenv("OTAE_DEBUG", "1")
    with pytest.raises(TypeError):
        main(["list"])


def test_otae_debug_reraises_user_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("OTAE_DEBUG", "1")
    with pytest.raises(ValueError, match="training.epochs"):
        main(["train", "mnist/vae-quick", "training.epochs=abc", "--run-dir", str(tmp_path)])


def test_a_run_directory_in_use_is_refused_in_one_line_and_left_untouched(tmp_path, capsys):
    """Another process trains in the run directory (it holds its lock): train, --resume and
    --overwrite are each refused in one line before anything is read, written or removed."""
    from .test_io import hold_in_another_process

    run_dir = tmp_path / "run"
    assert main(["train", "mnist/vae-quick", *TINY, "training.epochs=1", "--no-report",
                 "--run-dir", str(run_dir)]) == 0  # fmt: skip
    capsys.readouterr()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    holder = hold_in_another_process(run_dir)
    try:
        for extra in (["--resume"], ["--overwrite"]):
            assert main(["train", "mnist/vae-quick", *TINY, "training.epochs=2", "--no-report",
                         "--run-dir", str(run_dir), *extra]) == 2  # fmt: skip
            one_error_line(capsys, f"run directory {run_dir} is in use by another process "
                           f"(pid {holder.pid})")  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[p] == before[p] for p in before if p.name != ".otae.lock")
    # the holder gone, --overwrite starts again: everything but the lock file is new
    assert main(["train", "mnist/vae-quick", *TINY, "training.epochs=1", "--no-report",
                 "--run-dir", str(run_dir), "--overwrite"]) == 0  # fmt: skip
