"""What the repository says to its users cites nothing a user cannot follow.

Docstrings, comments, help strings, config comments and the docs cite the papers and
their sections (e.g. "RAE paper §6.1"), a docs page, or say the thing itself; never
the project's internal notes, tracker numbers or where a measurement was run. The
history of a change belongs in CHANGELOG.md, which may tell it but not cite the notes.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: citations of internal notes, tracker numbers and the machines' terms of loan
INTERNAL = re.compile(
    r"spec §|\bspec's\b|\bthe spec\b|METHODS\.md|shared/spec"
    r"|\bissue[- ]#?\d|\bissue #|\bpre-issue"
    r"|\bleases?\b|transfer limit|\(module doc\)",
    re.IGNORECASE,
)
#: what CHANGELOG.md must not do: it tells the history, without citing the notes
INTERNAL_CHANGELOG = re.compile(r"spec §|METHODS\.md|shared/spec", re.IGNORECASE)

#: a word of every pattern above, lower case: lines without one are not searched (speed)
KEYWORDS = ("spec", "methods.md", "issue", "lease", "transfer limit", "module doc")

#: the files that contain the patterns as patterns
EXEMPT = {"tests/test_no_internal_references.py", "tests/test_cli_robustness.py"}


def scanned_files(root: Path = ROOT) -> list[Path]:
    """The user-facing text files checked with :data:`INTERNAL` (CHANGELOG.md apart)."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    files += sorted(p for p in (root / "examples").rglob("*")
                    if p.suffix in {".py", ".md", ".yaml", ".yml", ".sh"})
    files += sorted(p for p in (root / "src" / "otae").rglob("*")
                    if p.suffix in {".py", ".yaml", ".yml"})
    files += sorted((root / "benchmarks").glob("*.py")) + sorted((root / "benchmarks").glob("*.sh"))
    files += sorted((root / "tests").glob("*.py"))
    return [p for p in files
            if p.is_file() and p.relative_to(root).as_posix() not in EXEMPT]


def internal_references(path: Path, pattern: re.Pattern = INTERNAL,
                        root: Path = ROOT) -> list[str]:
    """``file:line: text`` of every line of ``path`` that ``pattern`` matches."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not any(word in text.lower() for word in KEYWORDS):
        return []
    name = path.relative_to(root).as_posix()
    return [f"{name}:{number}: {line.strip()}"
            for number, line in enumerate(text.splitlines(), 1)
            if any(word in line.lower() for word in KEYWORDS) and pattern.search(line)]


def test_no_internal_references():
    found = [hit for path in scanned_files() for hit in internal_references(path)]
    changelog = ROOT / "CHANGELOG.md"
    if changelog.is_file():
        found += internal_references(changelog, INTERNAL_CHANGELOG)
    assert not found, "internal references a user cannot follow:\n" + "\n".join(found)


def test_the_scan_finds_a_planted_reference(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# otae\n\nSee the RAE paper §6.1.\n", encoding="utf-8")
    (tmp_path / "docs" / "page.md").write_text(
        "fine\nthe conv nets (spec §3)\nalso fine\nas before issue-12\n", encoding="utf-8"
    )
    hits = [hit for path in scanned_files(tmp_path) for hit in internal_references(path, root=tmp_path)]
    assert hits == ["docs/page.md:2: the conv nets (spec §3)", "docs/page.md:4: as before issue-12"]
    # CHANGELOG.md may tell the history, not cite the notes
    changelog = tmp_path / "CHANGELOG.md"
    changelog.write_text("- issue 12: faster\n- see METHODS.md\n", encoding="utf-8")
    assert internal_references(changelog, INTERNAL_CHANGELOG, tmp_path) == [
        "CHANGELOG.md:2: - see METHODS.md"
    ]
