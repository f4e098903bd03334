"""MkDocs hooks that generate the API reference and the figure gallery at build time.

* API reference: one page ``api/<module>.md`` per entry of :data:`API_MODULES`, listing
  the module's public names (:func:`public_names`) for mkdocstrings, then its submodules
  (:func:`sections`), plus ``api/index.md``. **To document a new top-level module, add its
  dotted name to API_MODULES** (one line); the nav follows. A new submodule of a package
  with a page (``otae.training.callbacks``) needs no line: it becomes a section of the
  package's page. ``tests/test_docs_site.py`` fails while a top-level module has no page
  or a name in any module's ``__all__`` is documented nowhere.
* Gallery: every ``benchmarks/results/**/*.png`` is copied into the site under
  ``gallery/`` (nothing is duplicated in git) and appended to ``docs/gallery.md`` with a
  caption from a neighbouring ``.md`` (:func:`caption`).
* Benchmark results: ``benchmarks/results/*.md`` are copied in as pages under ``results/``.
* Links from ``docs/*.md`` to repository files outside ``docs/`` (``../src/otae/x.py``,
  ``../benchmarks/results/y.md``) become links to the module's API page or to the copy of
  the result page in the site; links to other repository files become plain text.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import griffe
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# The modules with an API page, in nav order. A package's page also holds each of its
# submodules that has no entry here (docstring and the names the package does not
# re-export: sections()), so a submodule needs an entry only for a page of its own.
API_MODULES = [
    "otae.checks",
    "otae.constants",
    "otae.discrepancies",
    "otae.losses",
    "otae.sphere",
    "otae.slicers",
    "otae.priors",
    "otae.nn",
    "otae.models",
    "otae.models.vae",
    "otae.models.gmvae",
    "otae.models.vampprior",
    "otae.models.wae",
    "otae.models.swae",
    "otae.models.rae",
    "otae.models.spherical",
    "otae.models.gwae",
    "otae.models.betatcvae",
    "otae.models.factorvae",
    "otae.models.sae",
    "otae.training",
    "otae.training.compiled",
    "otae.training.distributed",
    "otae.evaluation",
    "otae.data",
    "otae.cotraining",
    "otae.noise",
    "otae.parallel",
    "otae.profiling",
    "otae.typed_config",
    "otae.experiment",
    "otae.export",
    "otae.bench",
    "otae.tune",
]

GALLERY_PAGE = "gallery.md"
GALLERY_DIR = "gallery"
RESULT_PAGES = "results"


@functools.cache
def _package() -> griffe.Module:
    """otae as griffe reads it from ``src/`` (static: the build imports no torch)."""
    return griffe.load("otae", search_paths=[str(ROOT / "src")])


def _module(module_name: str) -> griffe.Module:
    return _package()[module_name.removeprefix("otae.")] if "." in module_name else _package()


def _target(member: griffe.Object | griffe.Alias) -> str:
    """The path of the object a member stands for (through re-exports)."""
    if not member.is_alias:
        return member.path
    try:
        return member.final_target.path
    except griffe.AliasResolutionError:
        return member.target_path


def public_names(module_name: str) -> list[str]:
    """The names a module's API page documents: its ``__all__``, or, without one, the
    classes and functions it defines whose names do not start with an underscore."""
    module = _module(module_name)
    if module.exports is not None:
        return [str(name) for name in module.exports]
    return [
        name
        for name, member in module.members.items()
        if not name.startswith("_")
        and not member.is_alias
        and (member.is_class or member.is_function)
    ]


def _submodules(module_name: str) -> list[str]:
    """A package's public submodules that have no page of their own."""
    return [
        sub.path
        for name, sub in _module(module_name).modules.items()
        if not name.startswith("_") and not sub.is_alias and sub.path not in API_MODULES
    ]


def sections(module_name: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` in the order of ``module_name``'s page: the module and its public
    names, then, for a package, each submodule without a page of its own (its docstring holds
    the math the functions' docstrings refer to) with the public names the package does not
    re-export (the re-exported ones are documented once, at the package).

    A name that is also a submodule's name (``otae.discrepancies.mmd``: the function
    re-exported over the module ``mmd.py``) is documented in that submodule's section
    (anchor ``otae.discrepancies.mmd.mmd``): griffe, like the anchor, takes the name for the
    submodule."""
    module = _module(module_name)
    names = [n for n in public_names(module_name) if not module.members[n].is_module]
    exported = {_target(module.members[n]) for n in names}
    out = [(module_name, names)]
    for sub in _submodules(module_name):
        members = _module(sub).members
        own = [n for n in public_names(sub) if _target(members[n]) not in exported]
        out.append((sub, own))
    return out


def _members(names: list[str]) -> str:
    return "".join(f"\n        - {name}" for name in names) if names else " false"


def _api_page(module_name: str) -> str:
    (root, names), *subs = sections(module_name)
    page = f"::: {root}\n    options:\n      members:{_members(names)}\n"
    if subs:
        page += "\n## Submodules\n"
    for sub, own in subs:
        options = f"members:{_members(own)}\n      heading_level: 3"
        page += f"\n::: {sub}\n    options:\n      {options}\n"
    return page


def _api_index() -> str:
    rows = []
    for name in API_MODULES:
        docstring = _module(name).docstring
        summary = (docstring.value if docstring else "").strip().split("\n\n")[0].replace("\n", " ")
        # Only the first sentence, and no reST roles in a Markdown table cell.
        summary = re.sub(r":[a-z]+:`~?\.?([^`]+)`", r"`\1`", summary.split(". ")[0]).rstrip(".")
        rows.append(f"| [`{name}`]({name}.md) | {summary.replace('|', '/')} |")
    return (
        "# API reference\n\nGenerated from the docstrings: one page per module with every "
        "name of its `__all__`, then, for a package, its submodules (their docstrings hold "
        "the math) with the public names the package does not re-export. Math is shown as "
        "TeX.\n\n| module | |\n|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def _result_pages() -> list[Path]:
    """The benchmark result pages the guides link to (``benchmarks/results/*.md``)."""
    return sorted(RESULTS.glob("*.md"))


def _figures() -> list[Path]:
    return sorted(RESULTS.rglob("*.png"))


def caption(png: Path) -> str:
    """A figure's caption: the title and first paragraph of the ``.md`` beside it with the
    same stem, else of ``table.md`` there; empty when neither exists. The figures of one
    folder share it (their folder's section of the gallery)."""
    for md in (png.with_suffix(".md"), png.parent / "table.md"):
        if md.exists():
            break
    else:
        return ""
    title, paragraph = "", ""
    for block in md.read_text(encoding="utf-8").split("\n\n"):
        block = block.strip()
        if block.startswith("#") and not title:
            title = block.lstrip("#").strip()
        elif block and not block.startswith(("#", "|")) and not paragraph:
            paragraph = " ".join(block.split())
    return ": ".join(part for part in (title, paragraph) if part)


def _gallery() -> str:
    """One section per results folder: the caption, then each figure under its file name."""
    sections: dict[Path, list[Path]] = {}
    for png in _figures():
        sections.setdefault(png.parent, []).append(png)
    parts = []
    for folder, pngs in sections.items():
        parts.append(f"## {folder.relative_to(RESULTS).as_posix()}\n\n")
        if text := caption(pngs[0]):
            parts.append(f"{text}\n\n")
        for png in pngs:
            rel = png.relative_to(RESULTS).as_posix()
            parts.append(f"![{png.stem}]({GALLERY_DIR}/{rel})\n\n*{png.name}*\n\n")
    return "".join(parts)


def on_config(config):
    api = [{"Overview": "api/index.md"}] + [{name: f"api/{name}.md"} for name in API_MODULES]
    results = [f"{RESULT_PAGES}/{md.name}" for md in _result_pages()]
    config.nav = [*config.nav, {"Benchmark results": results}, {"API reference": api}]
    return config


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "api/index.md", content=_api_index()))
    for name in API_MODULES:
        files.append(File.generated(config, f"api/{name}.md", content=_api_page(name)))
    for png in _figures():
        uri = f"{GALLERY_DIR}/{png.relative_to(RESULTS).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    for md in _result_pages():
        uri = f"{RESULT_PAGES}/{md.name}"
        files.append(File.generated(config, uri, abs_src_path=str(md)))
    return files


_OUTSIDE_LINK = re.compile(r"(!?)\[([^\]]*)\]\(\.\./([^)#\s]+)(#[^)\s]*)?\)")


def _outside_link(match: re.Match) -> str:
    bang, text, target, anchor = match.group(1), match.group(2), match.group(3), match.group(4)
    module = re.fullmatch(r"src/(otae/.+)\.py", target)
    if module:
        name = module.group(1).replace("/", ".").removesuffix(".__init__")
        if name in API_MODULES:
            return f"[{text}](api/{name}.md)"
        package = name.rsplit(".", 1)[0]
        if package in API_MODULES and name in _submodules(package):
            return f"[{text}](api/{package}.md#{name})"
    result = re.fullmatch(r"benchmarks/results/([^/]+\.md)", target)
    if result:
        return f"[{text}]({RESULT_PAGES}/{result.group(1)}{anchor or ''})"
    return match.group(0) if bang else text


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == GALLERY_PAGE:
        markdown = markdown.rstrip("\n") + "\n\n" + _gallery()
    if page.file.src_uri.count("/") == 0:
        markdown = _OUTSIDE_LINK.sub(_outside_link, markdown)
    return markdown
