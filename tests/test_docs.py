"""The README stays a front page (under 120 lines) and the documentation stays inside the
repository: no link leaves it, and every relative link in README.md and docs/ points at a file
that exists (and at a heading that exists, when it names one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 120

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
AUTOLINK = re.compile(r"<((?:https?|ftp|file)://[^>]+)>")
URL = re.compile(r"\b(?:https?|ftp)://([^/\s)>`'\"]+)")
LOCAL_HOSTS = re.compile(r"^(127\.0\.0\.1|localhost)(:\d+)?$")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks, inline code removed."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, re.sub(r"`[^`]*`", "", line)))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    return [(n, target) for n, line in prose(path) for target in LINK.findall(line)]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            slug = anchor(match.group(2))
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return found


def name(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_the_readme_fits_on_a_screen():
    lines = len(README.read_text().splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_no_link_leaves_the_repository(page):
    outside = []
    for number, line in prose(page):
        for host in URL.findall(line):
            if not LOCAL_HOSTS.match(host):
                outside.append(f"{name(page)}:{number}: a URL to {host}")
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            if not re.match(r"^https?://(127\.0\.0\.1|localhost)[:/]", target):
                outside.append(f"{name(page)}:{number}: {target}")
            continue
        resolved = (page.parent / target.split("#")[0]).resolve()
        if not resolved.is_relative_to(REPO_ROOT):
            outside.append(f"{name(page)}:{number}: {target} is outside the repository")
    for number, line in prose(page):
        outside += [f"{name(page)}:{number}: {url}" for url in AUTOLINK.findall(line)]
    assert not outside, "\n".join(outside)


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_relative_link_resolves(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # not relative: the test above
        file, _, fragment = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{name(page)}:{number}: {target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{name(page)}:{number}: {target}: no heading #{fragment} in {name(resolved)}")
    assert not broken, "\n".join(broken)


def test_the_helpers_see_links_anchors_and_code():
    assert anchor("`larr etl ingest`: bring your own logs") == "larr-etl-ingest-bring-your-own-logs"
    assert anchor("Set-up and the test suite") == "set-up-and-the-test-suite"
    page = REPO_ROOT / "docs" / "README.md"
    assert ("method.md" in {target for _, target in links(page)}) and "the-stages" in anchors(page)
