"""The docs site's home page is the README: ``docs/index.md`` is generated from it.

One source for every number on the two pages. ``python -m tests.readme_index``
(``make docs/index.md``) rewrites the page; ``tests/test_docs.py`` checks that
it is current.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTE = "<!-- generated from README.md by `python -m tests.readme_index`: edit the README -->\n"


def index_from_readme(readme: str) -> str:
    """The README with its links made relative to ``docs/``.

    ``docs/page.md`` becomes ``page.md``; a link to a file outside ``docs/``
    (``LICENSE``, ``CITATION.cff``) becomes its name in code, which the site
    cannot link.
    """
    text = readme.replace("](docs/", "](")

    def outside(match: re.Match) -> str:
        label, target = match.group(1), match.group(2)
        if target.startswith(("http", "#")) or target.split("#")[0].endswith(".md"):
            return match.group(0)
        return f"`{label}`" if not label.startswith("`") else label

    return NOTE + re.sub(r"(?<!!)\[([^\]]+)\]\(([^)]+)\)", outside, text)


def main() -> None:
    """Write ``docs/index.md`` from ``README.md``."""
    (ROOT / "docs" / "index.md").write_text(index_from_readme((ROOT / "README.md").read_text()))


if __name__ == "__main__":
    main()
