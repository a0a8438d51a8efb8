"""The documentation's relative links resolve.

Every relative link in README.md, CHANGELOG.md and docs/*.md must name a file or
folder of the repository, and a `#anchor` must name a heading of the linked Markdown
file, by GitHub's rules (lowercase; spaces to hyphens; punctuation other than hyphens
and underscores removed; a repeated heading gets -1, -2, ...). Offline, no fixtures.
"""
import re
import sys
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"


def documents():
    return [README, REPO / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]


FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target), text may hold one level of brackets; an
# optional <...> around the target and an optional "title" after it.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w: letters, digits and underscores, unicode included
    return text.replace(" ", "-")


def anchors(path):
    seen = {}
    found = set()
    text = path.read_text(encoding="utf-8")
    for _, line in prose_lines(text):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found.update(HTML_ANCHOR.findall(line))
    return found


def links(path):
    """(line number, target) of every link in the prose of a Markdown file."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)
        for m in INLINE_LINK.finditer(line):
            yield number, m.group(1)
        m = REFERENCE_DEF.match(line)
        if m:
            yield number, m.group(1)


def broken_links(path):
    """What is wrong with each relative link of one Markdown file, as messages."""
    problems = []
    for number, target in links(path):
        if SCHEME.match(target):
            continue  # https:, mailto: ...: not checked offline
        where = f"{path.relative_to(REPO)}:{number}: ({target})"
        file_part, _, anchor = target.partition("#")
        file_part = urllib.parse.unquote(file_part)
        linked = (path.parent / file_part).resolve() if file_part else path
        if REPO.resolve() not in (linked, *linked.parents):
            problems.append(f"{where} points outside the repository")
            continue
        if not linked.exists():
            problems.append(f"{where}: no such file or folder {linked.relative_to(REPO.resolve())}")
            continue
        if not anchor:
            continue
        if linked.suffix.lower() == ".md":
            if urllib.parse.unquote(anchor) not in anchors(linked):
                problems.append(f"{where}: no heading #{anchor} in {linked.name}")
        elif not re.fullmatch(r"L\d+(-L\d+)?", anchor):
            problems.append(f"{where}: #{anchor} in a file that is not Markdown (only #L<line> there)")
    return problems


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    problems = broken_links(doc)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_doc_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README) if not SCHEME.match(t)}
    missing = [str(p.relative_to(REPO)) for p in [*sorted(DOCS.glob("*.md")), REPO / "CHANGELOG.md", REPO / "LICENSE"]
               if p.resolve() not in linked]
    assert not missing, f"README.md links to none of: {missing}"


def test_slugs_follow_github():
    assert slug("Dead letters: list, replay, purge") == "dead-letters-list-replay-purge"
    assert slug("`dead-letters list`, `replay`, `purge`") == "dead-letters-list-replay-purge"
    assert slug("Where the worker's CPU goes") == "where-the-workers-cpu-goes"
    assert slug("snake_case and (parens) 2.0") == "snake_case-and-parens-20"
    assert slug("[Linked](x.md) heading") == "linked-heading"


def test_a_broken_link_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Same\n\n## Same\n", encoding="utf-8")
    doc = tmp_path / "README.md"
    doc.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#title) [ok](docs/a.md#same-1) [ok](#top) [web](https://x.test/y)\n"
        "# Top\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#same-2) `[code](not/a/link.md)` [out](../../etc/passwd)\n"
        "```\n[fenced](not/a/link.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(doc)
    assert len(problems) == 3, problems
    assert "docs/b.md" in problems[0] and "#same-2" in problems[1] and "outside" in problems[2]
