"""The README's Deploy snippets are the tested files: every code block marked
`<!-- from: PATH -->` must still appear, verbatim, in PATH."""
import os
import re

from stack import ROOT

MARKED = re.compile(r"<!-- from: (\S+) -->\n```\w*\n(.*?)\n```", re.S)


def test_readme_snippets_are_in_their_files():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    snippets = MARKED.findall(readme)
    assert len(snippets) >= 8, len(snippets)
    for path, snippet in snippets:
        with open(os.path.join(ROOT, path)) as f:
            assert snippet in f.read(), f"README snippet from {path} is no longer in the file"
