"""Multi-view (co-training) models saved and reloaded like single models: bit-identical
features, per-view codes and losses after reload; a tampered folder is refused in one line;
nothing in it is executed."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from otae import cotraining
from otae.cotraining import MULTIVIEW_CLASSES, MultiViewAutoencoders, train_cotraining
from otae.models import from_pretrained as single_from_pretrained
from otae.models.pretrained import CONFIG_FILE, FORMAT, WEIGHTS_FILE

DIMS = [5, 4, 3]


def views(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g) for d in DIMS]


def trained(cls=MultiViewAutoencoders, **options):
    settings = dict(latent_dims=[2, 3, 2], hidden=[[8], [6, 4], []], gamma=0.7, tau=0.3,
                    discrepancy="sliced", n_projections=7, view_names=["a", "b", "c"], seed=0)  # fmt: skip
    settings.update(options)
    model = cls(DIMS, **settings)
    # a few steps, so that no weight is at its initial value any more
    train_cotraining(model, views(), epochs=2, batch_size=8, seed=1)
    return model.eval()


def assert_same(model, again):
    assert type(again) is type(model) and not again.training
    state, loaded = model.state_dict(), again.state_dict()
    assert state.keys() == loaded.keys()
    assert all(torch.equal(state[k], loaded[k]) for k in state)
    x = views(10, seed=5)
    assert torch.equal(model.features(x), again.features(x))
    with torch.no_grad():
        for i, v in enumerate(x):
            (mean, logvar), (mean2, logvar2) = model.encode(i, v), again.encode(i, v)
            assert torch.equal(mean, mean2)
            assert (logvar is None and logvar2 is None) or torch.equal(logvar, logvar2)
            assert torch.equal(model.decode(i, mean), again.decode(i, mean))
        # the objective too: every hyperparameter came back
        terms = model.loss(x, torch.Generator().manual_seed(3))
        terms2 = again.loss(x, torch.Generator().manual_seed(3))
    assert terms.keys() == terms2.keys()
    assert all(torch.equal(terms[k], terms2[k]) for k in terms)


CASES = {
    "sliced, probabilistic": {},
    "sliced, deterministic": {"probabilistic": False},
    "hierarchical, prior components": dict(
        discrepancy="hierarchical", prior_components=4, hfgw_steps=3, latent_dims=2
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_reloaded_multiview_model_is_bit_identical(case, tmp_path):
    model = trained(**CASES[case])
    path = model.save_pretrained(tmp_path / "mv", data={"views": ["a", "b", "c"]})
    again = cotraining.from_pretrained(path)
    assert_same(model, again)
    config = json.loads((path / CONFIG_FILE).read_text())
    assert config["format"] == FORMAT and config["kind"] == "multiview"
    assert config["data"] == {"views": ["a", "b", "c"]}
    values = config["multiview"]
    assert values["class"] == "MultiViewAutoencoders" and values["input_dims"] == DIMS
    assert values["hidden"] == [[8], [6, 4], []] and values["view_names"] == ["a", "b", "c"]
    assert (values["gamma"], values["tau"]) == (0.7, 0.3)
    assert again.view_names == ["a", "b", "c"] and again.latent_dims == model.latent_dims


@pytest.mark.parametrize("name", sorted(set(MULTIVIEW_CLASSES) - {"MultiViewAutoencoders"}))
def test_the_baselines_reload_as_their_own_class(name, tmp_path):
    options = {"discrepancy": "hierarchical", "hfgw_steps": 3} if "Wasserstein" in name else {}
    model = trained(MULTIVIEW_CLASSES[name], **options)
    assert_same(model, cotraining.from_pretrained(model.save_pretrained(tmp_path / "mv")))


def test_the_empirical_discrepancy_reloads(tmp_path):
    pytest.importorskip("ot", reason="POT (otae[pot]) trains the empirical discrepancy")
    model = trained(discrepancy="empirical", prior_term="mmd", gw_max_iter=20)
    assert_same(model, cotraining.from_pretrained(model.save_pretrained(tmp_path / "mv")))


def test_a_model_of_another_class_is_not_saved(tmp_path):
    class Custom(MultiViewAutoencoders):
        pass

    with pytest.raises(ValueError, match="rebuilds a multi-view model by its class name"):
        Custom(DIMS, seed=0).save_pretrained(tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------- refusals
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mv") / "saved"
    trained().save_pretrained(folder)
    return folder


@pytest.fixture
def copy(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "copy")


def _edit(folder, change):
    values = json.loads((folder / CONFIG_FILE).read_text())
    change(values)
    (folder / CONFIG_FILE).write_text(json.dumps(values))


def _rewrite_tensors(folder, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / WEIGHTS_FILE))
    change(tensors)
    save_file(tensors, str(folder / WEIGHTS_FILE))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v["multiview"].__setitem__("class", "Evil"), "names multi-view class 'Evil'"),
        (lambda v: v["multiview"].__setitem__("seed", 3), r"unknown multi-view argument\(s\) seed"),
        (lambda v: v["multiview"].__setitem__("exec", "x"), r"argument\(s\) exec"),
        (lambda v: v["multiview"].pop("input_dims"), "lacks 'input_dims'"),
        (lambda v: v["multiview"].__setitem__("tau", 2.0), "tau in \\[0, 1\\]"),
        (lambda v: v["multiview"].__setitem__("input_dims", [5, 4, 9]),
         r"autoencoders.2.* is \(\d+(, \d+)?,?\) torch.float32, the model needs"),
        (lambda v: v.__setitem__("format", FORMAT + 1), "written by a newer otae"),
        (lambda v: v.pop("multiview"), "lacks 'multiview'"),
        (lambda v: v.__setitem__("kind", "nope"), "unknown 'kind' 'nope'"),
    ],
)  # fmt: skip
def test_a_config_that_does_not_fit_is_refused(copy, change, message):
    _edit(copy, change)
    with pytest.raises(ValueError, match=message):
        cotraining.from_pretrained(copy)


def test_extra_missing_and_pickled_tensors_are_refused(copy, tmp_path):
    _rewrite_tensors(copy, lambda t: t.__setitem__("backdoor", torch.zeros(1)))
    with pytest.raises(ValueError, match="does not fit its config: unexpected backdoor"):
        cotraining.from_pretrained(copy)
    _rewrite_tensors(copy, lambda t: [t.pop("backdoor"), t.pop(sorted(t)[0])])
    with pytest.raises(ValueError, match="does not fit its config: missing autoencoders.0"):
        cotraining.from_pretrained(copy)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (copy / WEIGHTS_FILE).write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(ValueError, match="is not a safetensors file"):
        cotraining.from_pretrained(copy)
    assert not marker.exists()


def test_single_and_multiview_folders_name_each_other_s_loader(saved, tmp_path):
    from otae.models import build_model, model_config_from_dict

    with pytest.raises(ValueError, match="multi-view .* otae.cotraining.from_pretrained"):
        single_from_pretrained(saved)
    config = model_config_from_dict({"name": "wae", "latent_dim": 2})
    build_model(config, (1, 4, 4), "mlp", {"hidden": [8]}).save_pretrained(tmp_path / "one")
    with pytest.raises(ValueError, match="single autoencoder: .* otae.models.from_pretrained"):
        cotraining.from_pretrained(tmp_path / "one")
    with pytest.raises(ValueError, match="no such folder"):
        cotraining.from_pretrained(tmp_path / "missing")


def test_encode_and_eval_refuse_a_multiview_folder_in_one_line(saved, tmp_path, capsys):
    from otae.cli import main

    for args in (["encode", str(saved), "--data", "mnist", "--out", str(tmp_path / "c.npz")],
                 ["eval", str(saved)]):  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "otae.cotraining.from_pretrained" in err


def test_a_hub_repo_id_loads_a_multiview_model(saved, monkeypatch):
    hub = pytest.importorskip("huggingface_hub", reason="the otae[hub] extra is not installed")
    seen = {}

    def snapshot_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(saved)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    again = cotraining.from_pretrained("user/multiview")
    assert seen["repo_id"] == "user/multiview"
    assert seen["allow_patterns"] == ["config.json", "model.safetensors", "README.md",
                                      "samples.png"]  # fmt: skip
    x = views(6, seed=2)
    assert torch.equal(again.features(x), cotraining.from_pretrained(saved).features(x))
