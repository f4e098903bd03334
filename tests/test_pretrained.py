"""Saved models: export -> from_pretrained is bit-identical for every registered model;
a tampered folder is refused in one line; nothing in it is executed."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from otae.models import MODELS, build_model, from_pretrained, model_config_from_dict
from otae.models.pretrained import CONFIG_FILE, FORMAT, WEIGHTS_FILE

IMAGE = (1, 8, 8)
#: small settings per registered model (every name of the registry: checked below)
SETTINGS = {
    "vae": {}, "gmvae": {}, "vampprior": {}, "wae": {}, "swae": {"n_projections": 8},
    "drae": {"n_projections": 8}, "prae": {"n_outer": 3}, "sae": {"n_iters": 5},
    "ssfg": {"n_iters": 2}, "mssfg": {"n_iters": 2, "n_locations": 2}, "pssfg": {"n_iters": 2},
    "maxsfg": {"n_iters": 2, "n_starts": 2}, "gwae": {"prior": "factorised_neural"},
    "betatcvae": {"dataset_size": 100}, "factorvae": {},
}  # fmt: skip


def build(name, seed=0):
    config = model_config_from_dict({"name": name, "latent_dim": 3, "n_components": 3,
                                     **SETTINGS[name]})  # fmt: skip
    torch.manual_seed(seed)
    model = build_model(config, IMAGE, "mlp", {"hidden": [16]},
                        generator=torch.Generator().manual_seed(seed + 1))  # fmt: skip
    # move every buffer off its initial value (batch-norm statistics, learned locations)
    x = torch.rand(32, *IMAGE, generator=torch.Generator().manual_seed(seed + 2))
    model.train()
    model.loss(x, torch.Generator().manual_seed(3))
    return model.eval()


def test_every_registered_model_has_settings_here():
    assert set(SETTINGS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_reloaded_model_gives_bit_identical_outputs(name, tmp_path):
    model = build(name)
    model.save_pretrained(tmp_path / "m", data={"image_shape": list(IMAGE)})
    again = from_pretrained(tmp_path / "m")
    assert type(again) is type(model) and not again.training
    # everything but a critic (left out of exports by default: the test below)
    critic = tuple(f"{m}." for m in model.training_only_modules())
    state, loaded = model.state_dict(), again.state_dict()
    assert state.keys() == loaded.keys()
    assert all(torch.equal(state[k], loaded[k]) for k in state if not k.startswith(critic))
    x = torch.rand(6, *IMAGE, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        mean, logvar = model.encode(x)
        mean2, logvar2 = again.encode(x)
        assert torch.equal(mean, mean2)
        assert (logvar is None and logvar2 is None) or torch.equal(logvar, logvar2)
        assert torch.equal(model.decode(mean), again.decode(mean))
        assert torch.equal(model.sample(5, torch.Generator().manual_seed(4)),
                           again.sample(5, torch.Generator().manual_seed(4)))  # fmt: skip
    config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert config["format"] == FORMAT and config["model"]["name"] == name
    assert config["image_shape"] == list(IMAGE) and config["network"]["architecture"] == "mlp"


@pytest.mark.parametrize(("name", "critic"), [("gwae", "critic"), ("factorvae", "discriminator")])
def test_an_export_leaves_out_what_only_training_uses_unless_asked(name, critic, tmp_path):
    from safetensors.torch import load_file

    model = build(name)
    assert model.training_only_modules() == (critic,)
    assert build("vae").training_only_modules() == ()
    model.save_pretrained(tmp_path / "lean")
    model.save_pretrained(tmp_path / "full", with_critic=True)
    lean = load_file(str(tmp_path / "lean" / WEIGHTS_FILE))
    full = load_file(str(tmp_path / "full" / WEIGHTS_FILE))
    state = model.state_dict()
    assert set(full) == set(state)
    assert set(lean) == {k for k in state if not k.startswith(f"{critic}.")} != set(state)
    for folder, omitted in (("lean", [critic]), ("full", [])):
        config = json.loads((tmp_path / folder / CONFIG_FILE).read_text())
        assert config["omitted_modules"] == omitted
    # the full folder brings the critic back exactly; the lean one leaves it as built
    again = from_pretrained(tmp_path / "full")
    critic_state = getattr(model, critic).state_dict()
    assert all(torch.equal(v, getattr(again, critic).state_dict()[k])
               for k, v in critic_state.items())  # fmt: skip
    lean_model = from_pretrained(tmp_path / "lean")
    assert not all(torch.equal(v, getattr(lean_model, critic).state_dict()[k])
                   for k, v in critic_state.items())  # fmt: skip


def test_only_training_modules_may_be_omitted(tmp_path):
    model = build("gwae")
    model.save_pretrained(tmp_path / "m")

    def claim(values):
        values["omitted_modules"] = ["encoder"]

    _edit_config(tmp_path / "m", claim)
    with pytest.raises(ValueError, match=r"'omitted_modules' may list only modules that "
                       r"training alone uses \(critic\); got \['encoder'\]"):  # fmt: skip
        from_pretrained(tmp_path / "m")
    # an entry that is no module name at all is the same one line, not a TypeError
    _edit_config(tmp_path / "m", lambda values: values.update(omitted_modules=[{"a": 1}]))
    with pytest.raises(ValueError, match=r"may list only modules .*got \[\{'a': 1\}\]"):
        from_pretrained(tmp_path / "m")
    # an export that says nothing is omitted must hold the critic
    _edit_config(tmp_path / "m", lambda values: values.update(omitted_modules=[]))
    with pytest.raises(ValueError, match="does not fit its config: missing critic."):
        from_pretrained(tmp_path / "m")


@pytest.fixture
def saved(tmp_path):
    build("wae").save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def _edit_config(folder, change):
    path = folder / CONFIG_FILE
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def _rewrite_tensors(folder, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / WEIGHTS_FILE))
    change(tensors)
    save_file(tensors, str(folder / WEIGHTS_FILE))


def test_an_extra_tensor_is_refused(saved):
    _rewrite_tensors(saved, lambda t: t.__setitem__("backdoor", torch.zeros(1)))
    with pytest.raises(ValueError, match="does not fit its config: unexpected backdoor"):
        from_pretrained(saved)


def test_a_missing_tensor_is_refused(saved):
    def drop(tensors):
        del tensors[sorted(tensors)[0]]

    _rewrite_tensors(saved, drop)
    with pytest.raises(ValueError, match="does not fit its config: missing "):
        from_pretrained(saved)


def test_a_wrong_shape_is_refused(saved):
    def grow(tensors):
        key = next(k for k in sorted(tensors) if tensors[k].dim() == 2)
        tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])

    _rewrite_tensors(saved, grow)
    with pytest.raises(ValueError, match=r"is \(\d+, \d+\) torch.float32, the model needs"):
        from_pretrained(saved)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v["model"].__setitem__("name", "evil"), "names model 'evil', which this otae"),
        (lambda v: v.__setitem__("format", FORMAT + 1), "written by a newer otae"),
        (lambda v: v["network"].__setitem__("architecture", "nope"), "unknown network architecture"),
        (lambda v: v.pop("image_shape"), "lacks 'image_shape'"),
        (lambda v: v["model"].__setitem__("latent_dim", 5), r"is \(16, 3\) torch.float32, the model needs \(16, 5\)"),
    ],
)  # fmt: skip
def test_a_config_that_does_not_fit_is_refused(saved, change, message):
    _edit_config(saved, change)
    with pytest.raises(ValueError, match=message):
        from_pretrained(saved)


def test_a_pickle_renamed_to_safetensors_is_refused_without_running_it(saved, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (saved / WEIGHTS_FILE).write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(ValueError, match="is not a safetensors file"):
        from_pretrained(saved)
    assert not marker.exists()


def test_a_model_the_registry_cannot_rebuild_is_not_saved(tmp_path):
    from otae import models, nn, priors

    encoder, decoder = nn.build_networks("mlp", IMAGE, 3, probabilistic=False, hidden=[16])
    model = models.PriorSampleAutoencoder(models.ModelConfig(latent_dim=3), encoder, decoder,
                                          priors.build_prior("normal", 3))  # fmt: skip
    with pytest.raises(ValueError, match="needs a model built by otae.models.build_model"):
        model.save_pretrained(tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_not_a_folder_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no config.json"):
        from_pretrained(tmp_path / "empty")
