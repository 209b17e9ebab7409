"""The README stays a front page and the docs/ pages hold the manual: every relative link
between them resolves, to a file that exists and, with a #anchor, to one of its headings."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose(text: str) -> str:
    """The page without its fenced code blocks and inline code spans, where a `[..](..)`
    is code (jq, YAML), not a link."""
    kept, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            kept.append(re.sub(r"`+[^`]*`+", "", line))
    return "\n".join(kept)


def links(text: str) -> list[str]:
    plain = prose(text)
    return INLINE_LINK.findall(plain) + REFERENCE_LINK.findall(plain)


def is_relative(target: str) -> bool:
    return not (re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith(("#", "//")))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links as their text, no code marks)
    lowercased, punctuation dropped but for hyphens and underscores, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
    """Every heading's anchor, repeats numbered as GitHub does (`x`, `x-1`, `x-2`)."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(page.read_text()).splitlines():
        heading = HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_the_readme_is_a_front_page_of_at_most_25000_characters():
    assert len(README.read_bytes()) <= 25_000


def test_the_manual_has_its_pages():
    docs = [page.name for page in PAGES[1:]]
    assert len(docs) >= 3
    for name in ("semantics.md", "service.md", "notify.md", "kafka.md", "monitoring.md", "options.md",
                 "performance.md", "reliability.md", "architecture.md"):
        assert name in docs, name


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in links(README.read_text())
              if is_relative(target)}
    for page in PAGES[1:]:
        assert page.resolve() in linked, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    targets = [target for target in links(page.read_text()) if is_relative(target)]
    if page == README:
        assert targets, "the README links its docs pages"
    for target in targets:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve()
        assert linked.exists(), f"{page.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target} (no such heading in {linked.name})"


def test_slugs_are_the_ones_github_makes():
    assert slug("Running as a service") == "running-as-a-service"
    assert slug("Which key: `--key userId` or `--key orderId`") == "which-key---key-userid-or---key-orderid"
    assert slug("Reliability: what was tried and survived") == "reliability-what-was-tried-and-survived"
    assert slug("Configuration: environment and file") == "configuration-environment-and-file"
    assert {"exit-status", "options", "configuration-environment-and-file"} <= anchors(ROOT / "docs" / "options.md")


def test_links_in_code_are_not_links():
    text = "a [link](x.md) and `[code](y.md)`\n```sh\njq '[.a](b)'\n```\n[ref]: z.md\n"
    assert links(text) == ["x.md", "z.md"]
    assert not is_relative("https://www.standardwebhooks.com/") and not is_relative("#anchor")
    assert not is_relative("mailto:someone@example.com") and is_relative("docs/x.md#y")
