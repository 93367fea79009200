"""Every ```python example of the documentation (docs/**/*.md) and of README.md is executed, so they cannot drift.

One test per page: the page's ```python blocks run top to bottom in one namespace (a later block may use what an
earlier one defined, as a reader would), in a fresh temporary directory (files an example writes land there).
A block that must not run is not Python: shell commands are ```bash / ```console, output is ```text.

Written by hand rather than with a plugin: pytest's own doctest collects ``>>>`` sessions, not fenced blocks, and the
plugins that execute fenced Markdown blocks (pytest-markdown-docs, pytest-codeblocks, phmdoctest) are small projects
that would add a dependency for what a regular expression and ``exec`` do here; by hand, the test also runs each page
in a temporary directory and fails on the warnings dgm raises when a result may be wrong. A failing block is reported
with its page and line (the code is compiled with its line numbers in the page), so the traceback points into the
Markdown file.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
SLOW_PAGE_SECONDS = 30.0  # the budget of one page on an idle 2-core CPU; the test reports pages over it


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown text, as (line of the block's first code line, dedented code)."""
    blocks = []
    for match in FENCE.finditer(text):
        if match.group("info").strip().split(" ")[0] not in ("python", "py"):
            continue
        line = text.count("\n", 0, match.start("body")) + 1
        indent = len(match.group("indent"))
        body = "".join(code[indent:] if code[:indent].strip() == "" else code
                       for code in match.group("body").splitlines(keepends=True))
        blocks.append((line, body))
    return blocks


def test_block_collection_finds_indented_and_plain_blocks():
    text = "# t\n\n```python\na = 1\n```\n\n* item\n\n  ```python\n  b = a + 1\n  ```\n\n```bash\nls\n```\n"
    assert python_blocks(text) == [(4, "a = 1\n"), (10, "b = a + 1\n")]


# All pages together: about 14 minutes sequentially on the 2 shared cores at load average 15-27 (each page
# 0.2-200 s, most of it compiling); several times faster on an idle machine, but well over the 60 s budget of an
# unmarked test.
@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p.read_text())],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs_example__"}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for line, code in python_blocks(page.read_text()):
            # pad with blank lines so that a traceback names the line in the Markdown page
            exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
    elapsed = time.perf_counter() - start
    # dgm warns when a result may be wrong (failed trajectories, stuck chains, no starting point): an example that
    # triggers such a warning teaches the wrong thing, so a warning raised from the page or from dgm fails the test
    ours = [w for w in caught if str(ROOT) in str(w.filename)]
    assert not ours, "\n".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in ours)
    if elapsed > SLOW_PAGE_SECONDS:
        print(f"{page.relative_to(ROOT)}: {elapsed:.1f} s (budget {SLOW_PAGE_SECONDS:.0f} s on an idle 2-core CPU)")
