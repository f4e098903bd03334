"""MkDocs hooks that generate the API reference and the figure gallery at build time.

* API reference: one page ``api/<module>.md`` per entry of :data:`API_MODULES`, listing
  the module's public names (:func:`public_names`) for mkdocstrings, plus ``api/index.md``.
  **To document a new module, add its dotted name to API_MODULES** (one line); the nav
  follows. ``tests/test_docs_site.py`` fails while a module with ``__all__`` has a public
  name that no page documents.
* Gallery: every ``benchmarks/results/**/*.png`` is copied into the site under
  ``gallery/`` (nothing is duplicated in git) and appended to ``docs/gallery.md`` with a
  caption from a neighbouring ``.md`` (:func:`caption`).
* Links from ``docs/*.md`` to repository files outside ``docs/`` (``../src/otae/x.py``,
  ``../benchmarks/results/y.md``) become links to the module's API page or to the copy of
  the result page in the site; links to other repository files become plain text.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# The modules with an API page, in nav order. A package re-exports its submodules'
# public names, so a submodule needs its own entry only when a name is not re-exported.
API_MODULES = [
    "otae.discrepancies",
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
    "otae.bench",
]

GALLERY_PAGE = "gallery.md"
GALLERY_DIR = "gallery"
RESULT_PAGES = "results"


def public_names(module_name: str) -> list[str]:
    """The names a module's API page documents: its ``__all__``, or, without one, the
    classes and functions it defines whose names do not start with an underscore."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module_name
    ]


def _api_page(module_name: str) -> str:
    members = "".join(f"\n        - {name}" for name in public_names(module_name))
    return f"::: {module_name}\n    options:\n      members:{members or ' []'}\n"


def _api_index() -> str:
    rows = []
    for name in API_MODULES:
        doc = inspect.getdoc(importlib.import_module(name)) or ""
        summary = doc.strip().split("\n\n")[0].replace("\n", " ")
        # Only the first sentence, and no reST roles in a Markdown table cell.
        summary = re.sub(r":[a-z]+:`~?\.?([^`]+)`", r"`\1`", summary.split(". ")[0]).rstrip(".")
        rows.append(f"| [`{name}`]({name}.md) | {summary.replace('|', '/')} |")
    return (
        "# API reference\n\nGenerated from the docstrings: one page per module, listing "
        "every name of the module's `__all__`.\n\n| module | |\n|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def _figures() -> list[Path]:
    return sorted(RESULTS.rglob("*.png"))


def caption(png: Path) -> str:
    """A figure's caption: the title and first paragraph of the ``.md`` beside it with the
    same stem, else of ``table.md`` there; empty when neither exists."""
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
    parts = []
    for png in _figures():
        rel = png.relative_to(RESULTS).as_posix()
        text = caption(png)
        parts.append(
            f"## {rel}\n\n![{png.stem}]({GALLERY_DIR}/{rel})\n\n"
            + (f"{text}\n\n" if text else "")
        )
    return "\n".join(parts)


def on_config(config):
    api = [{"Overview": "api/index.md"}] + [{name: f"api/{name}.md"} for name in API_MODULES]
    config.nav = [*config.nav, {"API reference": api}]
    return config


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "api/index.md", content=_api_index()))
    for name in API_MODULES:
        files.append(File.generated(config, f"api/{name}.md", content=_api_page(name)))
    for png in _figures():
        uri = f"{GALLERY_DIR}/{png.relative_to(RESULTS).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    for md in sorted(RESULTS.glob("*.md")):
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
