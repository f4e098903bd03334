"""The docs site: every public name has an API page, and `mkdocs build --strict` builds it
offline with the gallery's figures (needs the docs tools: `make docs` installs them)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import otae

ROOT = Path(__file__).resolve().parent.parent
# Public modules deliberately without an API page, and why.
NOT_API = {
    "otae.cli": "the command line, documented by `otae --help` and the README",
    "otae.__main__": "`python -m otae`",
}


def _load_hooks():
    spec = importlib.util.spec_from_file_location("otae_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_griffe_extension():
    spec = importlib.util.spec_from_file_location("otae_griffe_rst", ROOT / "docs" / "griffe_rst.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def _otae_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(otae.__path__, "otae.")
        if not any(part.startswith("_") for part in info.name.split(".")[1:])
    )


def _documented() -> dict[str, set[int]]:
    """name -> ids of the objects the API pages document under that name."""
    out: dict[str, set[int]] = {}
    for page in hooks.API_MODULES:
        for module_name, names in hooks.sections(page):
            module = importlib.import_module(module_name)
            for name in names:
                out.setdefault(name, set()).add(id(getattr(module, name)))
    return out


def test_every_public_name_is_on_an_api_page():
    """Each name in the ``__all__`` of any otae module is documented: its module has a page,
    or a module with a page re-exports the same object (new module -> add it to
    ``docs/hooks.py``'s API_MODULES)."""
    documented = _documented()
    missing = []
    for module_name in _otae_modules():
        module = importlib.import_module(module_name)
        if not hasattr(module, "__all__"):
            continue
        for name in module.__all__:
            if id(getattr(module, name)) not in documented.get(name, set()):
                missing.append(f"{module_name}.{name}")
    assert missing == [], f"public names without an API page: {missing}"


def test_every_top_level_module_has_a_page():
    top = {name for name in _otae_modules() if name.count(".") == 1}
    pages = {name for name in hooks.API_MODULES if name.count(".") == 1}
    assert sorted(top - pages - set(NOT_API)) == []
    assert set(hooks.API_MODULES) <= set(_otae_modules())


def test_public_names_without_all_are_the_module_own_classes_and_functions():
    # otae.parallel has no __all__: its page lists what it defines, not what it imports.
    names = hooks.public_names("otae.parallel")
    assert names == ["BatchShards", "local_batches", "GlobalBatchNorm", "convert_batchnorm"]
    assert hooks.public_names("otae.sphere") == list(importlib.import_module("otae.sphere").__all__)


def test_rst_math_and_literal_blocks_become_markdown():
    ext = _load_griffe_extension()
    text = "Value\n\n.. math:: a = b\n          + c,\n\nthen x::\n\n    run dir/\n      a\n\nend"
    assert ext._blocks(text) == (
        "Value\n\n\n\\[\na = b\n+ c,\n\\]\n\n\nthen x:\n\n```text\nrun dir/\n  a\n```\n\n\nend"
    )


def test_grouped_parameters_are_split_and_roles_become_autorefs():
    ext = _load_griffe_extension()
    text = "Sum.\n\nArgs:\n    mu, sigma: the moments,\n        (K, d).\n    n: count.\n\nx, y: kept"
    assert ext._split_grouped(text) == (
        "Sum.\n\nArgs:\n    mu: the moments,\n        (K, d).\n    sigma: the moments,\n"
        "        (K, d).\n    n: count.\n\nx, y: kept"
    )

    class Obj:  # resolves nothing: the identifier stays the written name
        parent = None

        def resolve(self, name):
            raise AttributeError(name)

    assert ext._inline(r"see :func:`~a.b.f` and :math:`x^2`", Obj()) == (
        'see <autoref identifier="a.b.f" optional><code>f</code></autoref> and \\(x^2\\)'
    )


def make_docs_command() -> tuple[dict[str, str], list[str]]:
    """The environment assignments and the mkdocs arguments of the Makefile's ``docs``
    recipe (``NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site``), so
    the test builds exactly as ``make docs`` does."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^docs:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe, "no docs target in the Makefile"
    words = shlex.split(recipe.group(1))
    at = next(i for i, word in enumerate(words) if word.endswith("/mkdocs"))
    env = dict(word.split("=", 1) for word in words[:at])
    return env, words[at + 1 :]


def test_the_test_build_is_make_docs():
    env, args = make_docs_command()
    assert args[:2] == ["build", "--strict"] and "--site-dir" in args
    assert not {"-q", "--quiet"} & set(args)  # the build's warnings must be seen
    assert env.get("NO_MKDOCS_2_WARNING") == "1"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``make docs``'s build (same command and arguments) into a temporary folder; it fails
    on any WARNING line (griffe's docstring warnings included), not only on the exit code."""
    out = tmp_path_factory.mktemp("site")
    env, args = make_docs_command()
    args[args.index("--site-dir") + 1] = str(out)
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", *args],
        cwd=ROOT,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    warnings = [line for line in output.splitlines() if line.lstrip().startswith("WARNING")]
    assert warnings == [], "\n".join(warnings)
    assert proc.returncode == 0, output[-4000:]
    return out


def test_site_has_an_anchor_for_every_public_name(site):
    missing = []
    for page in hooks.API_MODULES:
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        for module_name, names in hooks.sections(page):
            for anchor in [module_name, *(f"{module_name}.{name}" for name in names)]:
                if f'id="{anchor}"' not in html:
                    missing.append(anchor)
    assert missing == []


def test_site_renders_docstring_rest_as_markdown(site):
    html = (site / "api" / "otae.discrepancies" / "index.html").read_text(encoding="utf-8")
    assert '<div class="arithmatex">\\[' in html
    assert '<span class="arithmatex">\\(' in html
    # :func:`.one_dimensional.fgw_1d_rows` style references resolve to links.
    assert 'class="autorefs autorefs-internal"' in html
    # The function mmd re-exported over the module mmd.py: documented in the module's section.
    at = html.index('id="otae.discrepancies.mmd.mmd"')
    assert "doc-function-name" in html[at : at + 300]
    for page in (site / "api").rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        for rest in (":func:`", ":class:`", ":math:`", ".. math::", "<autoref "):
            assert rest not in text, (page, rest)


def test_site_is_offline(site):
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, page


def test_gallery_holds_every_benchmark_figure(site):
    results = ROOT / "benchmarks" / "results"
    figures = sorted(results.rglob("*.png"))
    assert figures
    html = (site / "gallery" / "index.html").read_text(encoding="utf-8")
    for png in figures:
        rel = png.relative_to(results).as_posix()
        assert (site / "gallery" / rel).read_bytes() == png.read_bytes(), rel
        assert f'src="{rel}"' in html, rel
    # The sweep figure is captioned by its sweep.md's title.
    assert "Co-training sweep (one factor at a time" in html


def test_guide_links_to_repository_files_point_into_the_site(site):
    html = (site / "distributed" / "index.html").read_text(encoding="utf-8")
    assert 'href="../api/otae.parallel/"' in html  # ../src/otae/parallel.py
    assert 'href="../api/otae.training/#otae.training.trainer"' in html  # a submodule section
    assert 'href="../results/training_step/"' in html  # ../benchmarks/results/training_step.md
    assert (site / "results" / "training_step" / "index.html").exists()
    assert "../tests/test_distributed.py" not in html  # not in the site: plain text
