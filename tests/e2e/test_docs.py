"""The documentation tells the truth about the files it shows (README.md, CONTRIBUTING.md,
CHANGELOG.md, SECURITY.md and docs/):

  - every code block marked `<!-- from: PATH -->` on the line before its fence appears, verbatim,
    in PATH;
  - every json or yaml code block is either such a block or marked `<!-- example -->` (it shows no
    file of the repository), so that no file can be shown from memory;
  - every relative link points to a file that exists, and every `#anchor` to a heading there;
  - README.md stays a landing page: under 300 lines."""
import glob
import os
import re

import pytest

from stack import ROOT

PAGES = sorted(["README.md", "CONTRIBUTING.md", "CHANGELOG.md", "SECURITY.md"]
               + [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))])
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!-- (?:from: (\S+)|example) -->$")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def read(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def code_blocks(text):
    """(language, the marker line before the fence or None, content) of each fenced block."""
    lines, blocks, i = text.split("\n"), [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening and opening.group(1):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            marker = lines[i - 1] if i > 0 and MARKER.match(lines[i - 1]) else None
            blocks.append((opening.group(1), marker, "\n".join(lines[i + 1:end])))
            i = end + 1
        else:
            i += 1
    return blocks


def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page):
    return {slug(line.lstrip("#")) for line in read(page).split("\n") if re.match(r"^#{1,6} ", line)}


def test_every_page_exists_and_the_manual_is_complete():
    for page in ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", "SECURITY.md", "LICENSE"]:
        assert os.path.exists(os.path.join(ROOT, page)), page
    names = {os.path.basename(p) for p in PAGES if p.startswith("docs/")}
    assert names >= {"quickstart.md", "zitadel.md", "configuration.md", "rules.md", "services.md", "responses.md",
                     "deployment.md", "operations.md", "security.md", "architecture.md", "performance.md",
                     "compatibility.md"}, names


def test_the_readme_is_a_landing_page():
    assert len(read("README.md").split("\n")) < 300


@pytest.mark.parametrize("page", PAGES)
def test_blocks_that_show_a_file_are_that_file(page):
    shown = 0
    for language, marker, content in code_blocks(read(page)):
        path = marker and MARKER.match(marker).group(1)
        if path:
            with open(os.path.join(ROOT, path)) as f:
                assert content in f.read(), f"{page}: the block from {path} is no longer in the file"
            shown += 1
        elif language in ("json", "yaml"):
            assert marker, f"{page}: a {language} block neither marked from: a file nor as an example:\n{content[:200]}"
    assert shown or page != "README.md"


@pytest.mark.parametrize("page", PAGES)
def test_links_lead_somewhere(page):
    folder = os.path.dirname(page)
    for target in LINK.findall(read(page)):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(folder, path)) if path else page
        assert os.path.exists(os.path.join(ROOT, linked)), f"{page}: {target} leads nowhere"
        if anchor and linked.endswith(".md"):
            assert anchor in anchors(linked), f"{page}: {target}: no such heading in {linked}"
