"""The documentation stays navigable: every relative link and #anchor in README.md, docs/*.md
and the READMEs of data_catalog/, training/ and fortran_bridge/ resolves, the README stays a
front page (at most 300 lines), and its layout table names only paths that exist and every
package, module and folder at the top of paramlib/ and fortran_bridge/.

Anchors follow GitHub's rule: the heading's text, lower-cased, without its markup and its
punctuation (letters, digits, '_', '-' and spaces kept), spaces turned into '-'; a repeated
heading gets '-1', '-2', ...
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 300

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def documents() -> list[Path]:
    files = [README, *sorted((ROOT / "docs").glob("*.md"))]
    files += [ROOT / "data_catalog" / "README.md", ROOT / "training" / "README.md"]
    files += sorted((ROOT / "fortran_bridge").rglob("README.md"))
    return [path for path in files if path.is_file()]


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks, with inline code spans blanked."""
    lines, fence = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        marker = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
        if marker:
            if fence is None:
                fence = marker.group(1)[0]
            elif marker.group(1)[0] == fence:
                fence = None
            lines.append("")
            continue
        lines.append("" if fence else line)
    return lines


def slug(heading: str) -> str:
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link: its text
    text = re.sub(r"[*_]{1,3}(\S.*?\S|\S)[*_]{1,3}", r"\1", text)  # emphasis
    kept = []
    for char in text.lower():
        category = unicodedata.category(char)
        if char in " -_" or category[0] in "LM" or category in ("Nd", "Pc"):
            kept.append(char)
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(prose_lines(path), start=1):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            found.append((number, match.group(1)))
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if not destination.exists():
            problems.append(f"{where}: no such file {destination}")
            continue
        if not destination.is_relative_to(ROOT):
            problems.append(f"{where}: points outside the repository")
            continue
        if anchor:
            if destination.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not markdown")
            elif anchor not in anchors(destination):
                problems.append(f"{where}: no heading with anchor #{anchor} in {destination.name}")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_the_guides_are_there_and_linked_from_the_readme() -> None:
    guides = sorted((ROOT / "docs").glob("*.md"))
    assert guides, "docs/ holds the guides"
    linked = {target.partition("#")[0] for _, target in links(README)}
    assert [g.name for g in guides if f"docs/{g.name}" not in linked] == []


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines: move details into a guide under docs/"
    )


def layout_rows() -> list[list[str]]:
    """The backticked names of the first column of each row of README's Layout table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split(" | ", 1)[0]
            rows.append(re.findall(r"`([^`]+)`", first))
    return rows


def test_layout_table_names_existing_paths() -> None:
    rows = layout_rows()
    assert rows, "README.md has a Layout table"
    missing = [name for row in rows for name in row if "/" in name and not (ROOT / name).exists()]
    assert missing == []


@pytest.mark.parametrize("package", ["paramlib", "fortran_bridge"])
def test_layout_table_covers_every_top_level_entry(package: str) -> None:
    rows = layout_rows()
    entries = []
    for child in sorted((ROOT / package).iterdir()):
        if child.name.startswith(("_", ".")) and child.name != "__main__.py":
            continue
        if child.is_dir() and (package == "fortran_bridge" or (child / "__init__.py").exists()):
            entries.append(child.name)
        elif package == "paramlib" and child.suffix == ".py":
            entries.append(child.name)

    def named(entry: str) -> bool:
        full = f"{package}/{entry}"
        for row in rows:
            if full in row or f"{full}/" in row:
                return True
            in_package = any(name.startswith(f"{package}/") for name in row)
            if in_package and (entry in row or f"{entry}/" in row):
                return True
        return False

    assert [entry for entry in entries if not named(entry)] == []
