"""The documentation's relative links lead somewhere, and docs/ keeps its four kinds of page."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
KINDS = {"tutorial", "how-to", "reference", "explanation"}


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = []
    for page in markdown_files():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_docs_pages_live_in_the_four_kinds_of_folder() -> None:
    loose = [p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md"]
    assert loose == []
    folders = {p.name for p in (ROOT / "docs").iterdir() if p.is_dir()} - {"img"}
    assert folders == KINDS


def test_the_index_links_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    linked = {(ROOT / "docs" / t).resolve() for t in LINK.findall(index)}
    pages = {p.resolve() for p in (ROOT / "docs").rglob("*.md") if p.name != "index.md"}
    assert sorted(str(p.relative_to(ROOT)) for p in pages - linked) == []
