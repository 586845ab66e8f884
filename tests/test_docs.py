"""README and docs/: every relative link leads to a file that exists and, with an
``#anchor``, to a heading of that file (GitHub's anchors); every page of docs/ is linked
from README; no user-facing page refers to issue numbers a reader cannot see."""

from __future__ import annotations

import re

import pytest

from .worker_utils import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Pages README already links that other branches add; each is checked as soon as it exists.
ADDED_ELSEWHERE = {
    "docs/alert-sinks.md", "docs/case-review.md", "docs/contracts.md", "docs/dead-letters.md",
    "docs/demo.md", "docs/investigators.md", "docs/tracing.md",
}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_lead_somewhere(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists() and rel in ADDED_ELSEWHERE:
            continue
        assert dest.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert anchor in _anchors(dest), f"{page.name}: link to {target}: no such heading"


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"README does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_issue_numbers(page):
    assert not re.search(r"\bissue[- ]#?\d+", page.read_text(encoding="utf-8"), re.I)
