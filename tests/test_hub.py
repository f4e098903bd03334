"""The Hugging Face Hub (optional): `from_pretrained("user/name")` and `otae export --push`.

No network here: the failure paths run for real (offline mode, an endpoint where nothing
listens, no token, huggingface_hub missing) and must fail fast in one line; the success
paths run huggingface_hub's download / upload functions replaced by copies to and from a
local "remote" folder, which apply the same file patterns."""

from __future__ import annotations

import fnmatch
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from otae.cli import main
from otae.models import build_model, from_pretrained, model_config_from_dict
from otae.models.pretrained import HUB_FILES, HubError, is_hub_repo_id, resolve_folder

from .helpers import one_error_line

hub = pytest.importorskip("huggingface_hub", reason="the otae[hub] extra is not installed")
constants = pytest.importorskip("huggingface_hub.constants")

IMAGE = (1, 8, 8)
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, refused at once


def tiny_model():
    torch.manual_seed(0)
    config = model_config_from_dict({"name": "wae", "latent_dim": 3})
    model = build_model(config, IMAGE, "mlp", {"hidden": [16]})
    return model.eval()


@pytest.fixture
def isolated_hub(tmp_path, monkeypatch):
    """huggingface_hub with an empty cache and no token, whatever the machine has."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


@pytest.fixture
def fake_hub(isolated_hub, monkeypatch):
    """Repos as local folders ``remote/<user>/<name>``: ``snapshot_download`` copies the
    files its ``allow_patterns`` select into a snapshot folder (as the Hub's client
    does), ``HfApi.create_repo`` / ``upload_folder`` write into ``remote``. Every call
    is recorded in ``calls``."""
    remote = isolated_hub / "remote"
    calls: list[tuple[str, dict]] = []

    def snapshot_download(repo_id, **kwargs):
        calls.append(("snapshot_download", {"repo_id": repo_id, **kwargs}))
        source = remote / repo_id
        if not source.is_dir():
            response = SimpleNamespace(status_code=404, headers={}, request=None)
            raise hub.errors.RepositoryNotFoundError(f"404: {repo_id} not found",
                                                     response=response)  # fmt: skip
        snapshot = isolated_hub / "snapshots" / repo_id.replace("/", "--")
        snapshot.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if _matches(path.name, kwargs.get("allow_patterns") or ["*"]):
                shutil.copyfile(path, snapshot / path.name)
        return str(snapshot)

    class FakeApi:
        def __init__(self, token=None, **kwargs):
            calls.append(("HfApi", {"token": token, **kwargs}))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
            (remote / repo_id).mkdir(parents=True, exist_ok=True)

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            calls.append(("upload_folder", {"repo_id": repo_id, "folder_path": folder_path,
                                            **kwargs}))  # fmt: skip
            for path in Path(folder_path).iterdir():
                if _matches(path.name, kwargs.get("allow_patterns") or ["*"]):
                    shutil.copyfile(path, remote / repo_id / path.name)
            return type("Commit", (), {"commit_url": f"https://hub.test/{repo_id}/commit/1"})

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(hub, "HfApi", FakeApi)
    return remote, calls


def _booby_trap(folder: Path, marker: Path) -> None:
    """Files no loader may fetch or run: a script and pickles that would write ``marker``."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (folder / "model.pkl").write_bytes(pickle.dumps(Payload()))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))


# ---------------------------------------------------------------------------- repo ids
@pytest.mark.parametrize(
    "text, expected",
    [("user/repo", True), ("Org-1/model.v2_x", True), ("repo", False), ("/abs/path", False),
     ("./user/repo", False), ("a/b/c", False), ("user/..", False), ("../repo", False),
     ("user/re po", False), ("", False)],
)  # fmt: skip
def test_what_reads_as_a_hub_repo_id(text, expected):
    assert is_hub_repo_id(text) is expected


def test_a_local_folder_wins_over_a_repo_id_of_the_same_name(fake_hub, tmp_path, monkeypatch):
    _, calls = fake_hub
    monkeypatch.chdir(tmp_path)
    tiny_model().save_pretrained("user/repo")
    assert resolve_folder("user/repo") == Path("user/repo")
    from_pretrained("user/repo")
    assert calls == []


# ------------------------------------------------------------------- download: success
def test_from_pretrained_downloads_the_data_files_only_and_reloads_bit_identically(
    fake_hub, tmp_path
):
    remote, calls = fake_hub
    model = tiny_model()
    repo = remote / "user" / "repo"
    model.save_pretrained(repo)
    (repo / "README.md").write_text("# card\n")
    marker = tmp_path / "pwned"
    _booby_trap(repo, marker)

    loaded = from_pretrained("user/repo")
    [(name, kwargs)] = calls
    assert name == "snapshot_download" and kwargs["repo_id"] == "user/repo"
    assert kwargs["allow_patterns"] == ["config.json", "model.safetensors", "README.md",
                                        "samples.png"]  # fmt: skip
    assert kwargs["repo_type"] == "model" and kwargs["revision"] is None
    snapshot = tmp_path / "snapshots" / "user--repo"
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "README.md", "config.json", "model.safetensors"]  # fmt: skip
    assert not marker.exists()
    state, again = model.state_dict(), loaded.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    x = torch.rand(4, *IMAGE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model.embed(x), loaded.embed(x))
        assert torch.equal(model.decode(model.embed(x)), loaded.decode(loaded.embed(x)))


def test_revision_and_cache_dir_go_to_the_hub_client(fake_hub, tmp_path):
    remote, calls = fake_hub
    tiny_model().save_pretrained(remote / "user" / "repo")
    from_pretrained("user/repo", revision="v1", cache_dir=tmp_path / "cache")
    kwargs = calls[0][1]
    assert kwargs["revision"] == "v1" and kwargs["cache_dir"] == str(tmp_path / "cache")


def test_a_repo_without_an_otae_config_is_refused(fake_hub):
    remote, _ = fake_hub
    (remote / "user" / "other").mkdir(parents=True)
    (remote / "user" / "other" / "README.md").write_text("not ours\n")
    with pytest.raises(ValueError, match="the Hub repo user/other holds no config.json"):
        from_pretrained("user/other")


def test_a_repo_the_hub_does_not_have_is_one_line(fake_hub, capsys, tmp_path):
    with pytest.raises(HubError, match="nor a model repo on the Hugging Face Hub"):
        from_pretrained("user/missing")
    code = main(["encode", "user/missing", "--data", "mnist", "--out", str(tmp_path / "c.npz")])
    assert code == 2
    one_error_line(capsys, "user/missing is no local folder", "hf auth login")


# -------------------------------------------------------------- download: no network
def _timed_failure(call):
    start = time.perf_counter()
    with pytest.raises(HubError) as caught:
        call()
    elapsed = time.perf_counter() - start
    assert elapsed < 5, f"took {elapsed:.1f} s to fail"
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_offline_mode_fails_fast_in_one_line(isolated_hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = _timed_failure(lambda: from_pretrained("user/repo"))
    assert "could not reach the Hugging Face Hub to fetch it" in message
    assert message.startswith("user/repo is no local folder")


def test_an_unreachable_endpoint_fails_fast_in_one_line(isolated_hub, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE)
    message = _timed_failure(lambda: from_pretrained("user/repo"))
    assert "could not reach the Hugging Face Hub" in message and "no network" in message


def test_the_command_line_without_a_network_is_one_line_and_exit_2(tmp_path):
    """A fresh process with the environment variables a user would set: nothing patched."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=UNREACHABLE, HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "otae", "encode", "user/repo", "--data", "mnist",
         "--out", str(tmp_path / "c.npz")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("otae: error: user/repo is no local folder")
    assert "could not reach the Hugging Face Hub" in lines[0] and "Traceback" not in proc.stderr
    assert elapsed < 60  # the import of torch included; the Hub part is refused at once
    assert not (tmp_path / "c.npz").exists()


# ---------------------------------------------------------------------------- upload
@pytest.fixture
def exported(tmp_path):
    folder = tmp_path / "export"
    tiny_model().save_pretrained(folder)
    (folder / "README.md").write_text("---\nlibrary_name: otae\n---\n# card\n")
    return folder


def test_push_uploads_the_data_files_and_a_download_reloads_them(fake_hub, exported, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    from otae.export import push_to_hub

    remote, calls = fake_hub
    marker = tmp_path / "pwned"
    _booby_trap(exported, marker)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    url = push_to_hub(exported, "user/pushed")
    assert url == "https://hub.test/user/pushed/commit/1"
    by_name = dict(calls)
    assert by_name["HfApi"]["token"] == "hf_test"
    assert by_name["create_repo"]["exist_ok"] is True
    assert by_name["create_repo"]["repo_type"] == "model"
    assert by_name["upload_folder"]["allow_patterns"] == HUB_FILES
    assert sorted(p.name for p in (remote / "user" / "pushed").iterdir()) == [
        "README.md", "config.json", "model.safetensors"]  # fmt: skip
    loaded = from_pretrained("user/pushed")
    x = torch.rand(3, *IMAGE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(from_pretrained(exported).embed(x), loaded.embed(x))
    assert not marker.exists()


def test_push_without_a_token_is_one_line(isolated_hub, exported):
    from otae.export import push_to_hub

    with pytest.raises(HubError, match=r"needs a token: `hf auth login`.*HF_TOKEN"):
        push_to_hub(exported, "user/repo")


def test_push_to_an_unreachable_endpoint_fails_fast(isolated_hub, exported, monkeypatch):
    from otae.export import push_to_hub

    monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE)
    message = _timed_failure(lambda: push_to_hub(exported, "user/repo", token="hf_test"))
    assert message.startswith("could not reach the Hugging Face Hub to push user/repo")


def test_push_refuses_a_folder_that_is_not_an_export_and_a_bad_repo_id(isolated_hub, tmp_path):
    from otae.export import push_to_hub

    with pytest.raises(ValueError, match="holds no config.json: not an export folder"):
        push_to_hub(tmp_path, "user/repo", token="x")
    with pytest.raises(ValueError, match="needs a Hub repo id, user/name"):
        push_to_hub(tmp_path, "not a repo", token="x")


def test_export_push_on_the_command_line(vae_run, fake_hub, tmp_path, capsys, monkeypatch):
    remote, calls = fake_hub
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    out = tmp_path / "out"
    assert main(["export", str(vae_run), str(out), "--push", "user/vae", "--private"]) == 0
    assert "pushed to https://hub.test/user/vae/commit/1" in capsys.readouterr().out
    assert dict(calls)["create_repo"]["private"] is True
    card = (remote / "user" / "vae" / "README.md").read_text()
    assert 'from_pretrained("user/vae")' in card
    assert sorted(p.name for p in (remote / "user" / "vae").iterdir()) == sorted(HUB_FILES)
    config = json.loads((remote / "user" / "vae" / "config.json").read_text())
    assert config["data"]["dataset"] == "mnist"


def test_export_push_without_a_token_exports_then_says_so(vae_run, isolated_hub, tmp_path,
                                                          capsys):  # fmt: skip
    out = tmp_path / "out"
    assert main(["export", str(vae_run), str(out), "--push", "user/vae"]) == 2
    one_error_line(capsys, "needs a token")
    assert (out / "model.safetensors").is_file()  # the folder is written: push it later
    assert main(["export", str(vae_run), str(out), "--push", "no id"]) == 2
    one_error_line(capsys, "--push needs a Hub repo id")
    assert main(["export", str(vae_run), str(out), "--private"]) == 2
    one_error_line(capsys, "--private goes with --push")


# ----------------------------------------------------------- huggingface_hub missing
def test_without_huggingface_hub_the_error_names_the_extra(monkeypatch, exported, capsys,
                                                           tmp_path):  # fmt: skip
    from otae._optional import MissingDependencyError
    from otae.export import push_to_hub

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'otae\[hub\]'"):
        from_pretrained("user/repo")
    with pytest.raises(MissingDependencyError, match=r"pip install 'otae\[hub\]'"):
        push_to_hub(exported, "user/repo", token="x")
    assert main(["encode", "user/repo", "--data", "mnist", "--out", str(tmp_path / "c.npz")]) == 2
    one_error_line(capsys, "user/repo is no local folder", "otae[hub]")
    # a local folder needs no huggingface_hub
    assert from_pretrained(exported) is not None


def test_huggingface_hub_is_imported_only_when_the_hub_is_used():
    code = ("import sys, otae.models, otae.export, otae.cotraining, otae.cli\n"
            "print('huggingface_hub' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    assert out.stdout.strip() == "False"
