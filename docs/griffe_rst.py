r"""Griffe extension: the reST of otae's docstrings as Markdown the site renders offline.

otae's docstrings are Google style with reST markup; this rewrites, in every docstring of
the loaded package (before mkdocstrings parses it):

* ``:math:`x``` -> ``\(x\)`` and a ``.. math::`` block -> ``\[ ... \]``: pymdownx.arithmatex
  (generic mode) keeps the TeX as text in a ``span.arithmatex`` (no MathJax is loaded, so
  it reads as TeX; no network).
* ``:func:`name```, ``:class:``, ``:meth:``, ``:attr:``, ``:data:``, ``:mod:``, ``:exc:``,
  ``:obj:`` -> an *optional* mkdocs-autorefs cross-reference to the name resolved in the
  docstring's scope (``~a.b.c`` shows ``c``, a leading dot is relative to the package): a
  link where the target has a page, plain code where it has none (a private helper,
  torch), never a warning.
* a paragraph ending in ``::`` and the indented block after it -> a fenced code block.
* ``x, y: text`` in an ``Args:`` section (parameters documented together) -> one entry per
  name with the shared text, so each parameter is matched to the signature.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_ROLE = re.compile(r":(?:py:)?(func|class|meth|attr|data|mod|exc|obj):`([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_DIRECTIVE = re.compile(r"^(?P<indent>[ ]*)\.\. math::[ ]*(?P<first>.*)$")
_ARGS_HEADERS = ("Args:", "Arguments:", "Parameters:", "Other Parameters:", "Keyword Args:")
_GROUPED = re.compile(r"^(?P<indent>[ ]*)(?P<names>\*{0,2}\w+(?:, \*{0,2}\w+)+):(?P<text>.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blocks(text: str) -> str:
    """``.. math::`` and ``::`` literal blocks (an indented block after the marker line)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        math = _DIRECTIVE.match(line)
        literal = line.rstrip().endswith("::") and not math and line.strip() != "::"
        if not (math or literal):
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        j = i + 1
        # ".. math:: R = ..." starts the formula on the directive's line.
        first = math.group("first").strip() if math else ""
        body: list[str] = [" " * (base + 4) + first] if first else []
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
            body.append(lines[j])
            j += 1
        while body and not body[-1].strip():
            body.pop()
            j -= 1
        pad = " " * base
        inner = textwrap.dedent("\n".join(body)).strip("\n").split("\n")
        if math:
            # No blank or indented line inside: arithmatex takes the block as one paragraph.
            formula = [pad + b.strip() for b in inner if b.strip()]
            out += ["", pad + r"\[", *formula, pad + r"\]", ""]
        else:
            # reST shows "text::" as "text:" before the literal block.
            out += [line.rstrip()[:-1], "", pad + "```text"]
            out += [pad + b if b else "" for b in inner] + [pad + "```", ""]
        i = j
    return "\n".join(out)


def _split_grouped(text: str) -> str:
    """``a, b: text`` items of the parameter sections -> ``a: text`` and ``b: text``."""
    lines = text.split("\n")
    out: list[str] = []
    section_indent = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() in _ARGS_HEADERS:
            section_indent = _indent(line)
        elif line.strip() and section_indent is not None and _indent(line) <= section_indent:
            section_indent = None
        grouped = _GROUPED.match(line) if section_indent is not None else None
        if not grouped:
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        j = i + 1
        while j < len(lines) and lines[j].strip() and _indent(lines[j]) > base:
            j += 1
        for name in grouped.group("names").split(", "):
            out.append(f"{grouped.group('indent')}{name}:{grouped.group('text')}")
            out += lines[i + 1 : j]
        i = j
    return "\n".join(out)


def _resolve(obj: griffe.Object, name: str) -> str:
    """Full path of ``name`` as seen from ``obj``'s docstring; ``name`` when unresolvable."""
    if name.startswith("."):
        module = obj.module
        package = module if module.is_package else module.parent
        return f"{package.path}{name}"
    head, _, rest = name.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError):
            scope = scope.parent
            continue
        return f"{path}.{rest}" if rest else path
    return name


def _inline(text: str, obj: griffe.Object) -> str:
    def role(match: re.Match) -> str:
        target = match.group(2).strip()
        shown = target.split(".")[-1] if target.startswith("~") else target.lstrip(".")
        identifier = _resolve(obj, target.lstrip("~"))
        return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'

    text = _MATH_ROLE.sub(lambda m: rf"\({m.group(1)}\)", text)
    return _ROLE.sub(role, text)


def _objects(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class RstToMarkdown(griffe.Extension):
    """Rewrite the docstrings of a package once it is loaded (module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _inline(_blocks(_split_grouped(obj.docstring.value)), obj)
