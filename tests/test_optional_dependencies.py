"""A lean install: POT is optional, imported only by the features that use it."""

import subprocess
import sys

import pytest
import torch

from otae._optional import MissingDependencyError, require
from otae.cli import main
from otae.discrepancies import empirical_fgw, empirical_gw

from .helpers import one_error_line

LIBRARY_MODULES = (
    "otae.discrepancies", "otae.losses", "otae.models", "otae.training", "otae.evaluation",
    "otae.cotraining", "otae.bench", "otae.cli",
)


def test_core_modules_do_not_import_pot():
    code = (
        "import importlib, sys\n"
        f"for name in {LIBRARY_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('ot', 'geomloss') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_require_names_the_feature_and_the_install_line():
    with pytest.raises(MissingDependencyError, match=r"frobnicating needs the optional package "
                       r"'no_such_module_x'.*pip install 'otae\[x\]'"):
        require("no_such_module_x", feature="frobnicating", install="otae[x]")
    assert require("math", feature="-", install="-").sqrt(4.0) == 2.0


@pytest.fixture
def without_pot(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)  # `import ot` now raises ImportError


@pytest.mark.parametrize("solver", [empirical_gw, empirical_fgw])
def test_empirical_solvers_without_pot_say_how_to_install_it(without_pot, solver):
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(MissingDependencyError, match=r"pip install 'otae\[pot\]'"):
        solver(x, x + 1)


def test_cli_without_pot_fails_in_one_line_before_training(without_pot, views_npz, tmp_path,
                                                            capsys):
    argv = ["multiview", "--data", str(views_npz), "--discrepancy", "empirical",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    one_error_line(capsys, "pip install 'otae[pot]'")
    assert not (tmp_path / "out").exists()


def test_a_closed_pipe_ends_otae_list_quietly():
    """`otae list | head -1`: no "Broken pipe" error line, exit status 0."""
    script = "from otae.cli import main; import sys; sys.exit(main(['list']))"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0, stderr
    assert stderr == ""
