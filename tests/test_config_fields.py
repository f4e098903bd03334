"""Config sections validate themselves: Literal choices checked generically with the
section.key in the message, and every setting carries its resume policy."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from otae.training import ExperimentConfig, config_from_dict
from otae.training import config as config_module
from otae.typed_config import check_choices, choices


def _sections(cls, prefix=""):
    for f in dataclasses.fields(cls):
        yield cls, f, f"{prefix}{f.name}"
        kind = typing.get_type_hints(cls)[f.name]
        if f.metadata.get("resume") == "section":
            yield from _sections(kind, f"{prefix}{f.name}.")


def test_every_setting_has_a_resume_policy():
    missing = [key for _cls, f, key in _sections(ExperimentConfig) if "resume" not in f.metadata]
    assert not missing, f"settings without field(metadata={{'resume': ...}}): {missing}"
    policies = {f.metadata["resume"] for _c, f, _k in _sections(ExperimentConfig)}
    assert policies <= set(config_module.RESUME_POLICIES)


@pytest.mark.parametrize(
    "key, policy",
    [
        ("training.epochs", "free"),
        ("training.optimizer.lr", "applied"),
        ("training.optimizer.betas", "refused"),
        ("training.early_stopping.patience", "refused"),
        ("training.batch_size", "refused"),
        ("evaluation.fid_samples", "free"),
        ("evaluation.anything_later", "free"),  # a whole free section
        ("model.latent_dim", "refused"),
        ("model.some_models_own_option", "refused"),
        ("network.options.channels", "refused"),
        ("name", "free"),
        ("training.not_a_setting", "refused"),
    ],
)
def test_resume_policy_of_a_key(key, policy):
    assert config_module.resume_policy(key) == policy


@pytest.mark.parametrize(
    "values, message",
    [
        ({"training": {"optimizer": {"name": "sgd"}}},
         "training.optimizer.name must be one of adam, rmsprop, got 'sgd'"),
        ({"training": {"precision": "fp16"}}, "training.precision must be one of fp32, bf16"),
        ({"training": {"wandb_mode": "cloud"}}, "training.wandb_mode must be one of offline"),
        ({"training": {"early_stopping": {"mode": "up"}}},
         "training.early_stopping.mode must be one of min, max, got 'up'"),
        ({"evaluation": {"latent_method": "umap"}},
         "evaluation.latent_method must be one of pca, tsne, got 'umap'"),
        ({"training": {"regulariser_mode": "local"}},
         "training.regulariser_mode must be one of global, per_rank"),
    ],
)  # fmt: skip
def test_a_bad_choice_in_a_file_names_its_key(values, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict({"model": {"name": "vae"}, **values}).validate()


def test_a_bad_choice_set_in_python_is_caught_by_validate():
    config = config_from_dict({"model": {"name": "vae"}})
    config.validate()
    config.training.optimizer.name = "sgd"
    with pytest.raises(ValueError, match=r"^training\.optimizer\.name must be one of adam, rmsprop"):
        config.validate()


@dataclasses.dataclass
class Inner:
    kind: typing.Literal["a", "b"] = "a"
    many: list[typing.Literal["x", "y"]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_check_choices_walks_nested_dataclasses_and_lists():
    check_choices(Outer())
    with pytest.raises(ValueError, match=r"^top\.inner\.kind must be one of a, b, got 'c'$"):
        check_choices(Outer(Inner(kind="c")), "top")
    with pytest.raises(ValueError, match=r"^inner\.many\[1\] must be one of x, y, got 'z'$"):
        check_choices(Outer(Inner(many=["x", "z"])))
    assert choices(Inner, "kind") == ("a", "b")
