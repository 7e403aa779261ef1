"""The docs: the site builds strictly (once per run), its home page is the README, and every
number of the README's results summary is on the page it links to."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.readme_index import ROOT, index_from_readme

README = (ROOT / "README.md").read_text()


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}
    cmd = [str(mkdocs), "build", "--strict", "--site-dir", str(site), "-f", str(config)]
    return subprocess.run(cmd, capture_output=True, env=env)


def test_docs_site_builds_strictly(tmp_path) -> None:
    """Every page and link resolves (mkdocs --strict); the only full build of a test run."""
    built = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr.decode()[-2000:]
    assert (tmp_path / "site" / "pitfalls" / "index.html").exists()


def test_a_broken_link_fails_the_build(tmp_path) -> None:
    """The site's own link settings on a one-page site with a broken link: the build fails."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# x\n\n[gone](no-such-page.md)\n")
    small = {k: config[k] for k in ("site_name", "strict", "validation", "markdown_extensions")}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump({**small, "docs_dir": "docs"}))
    broken = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert broken.returncode != 0 and b"no-such-page.md" in broken.stderr


def test_home_page_is_the_readme() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    assert index == index_from_readme(README), "run: python -m tests.readme_index"
    assert "](docs/" not in index and "(LICENSE)" not in index


def test_readme_is_short() -> None:
    assert len(README) <= 10_000, len(README)


_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")


def _numbers(text: str) -> set[str]:
    text = text.replace("\u2013", "-").replace("\u2212", "-")
    return {n.rstrip(",") for n in _NUMBER.findall(text)}


def _summary_rows() -> list[tuple[str, list[str]]]:
    """(finding, linked docs pages) of each row of the README's results table."""
    section = README.split("## Results, in short", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and "docs/" in cells[2]:
            pages = sorted({m.split("#")[0] for m in re.findall(r"\((docs/[^)]+)\)", cells[2])})
            rows.append((cells[1], pages))
    return rows


def test_every_number_of_the_results_summary_is_on_its_page() -> None:
    rows = _summary_rows()
    assert len(rows) >= 8
    for finding, pages in rows:
        text = " ".join((ROOT / p).read_text() for p in pages)
        missing = _numbers(finding) - _numbers(text)
        assert not missing, f"{sorted(missing)} of {finding!r} not in {pages}"


def test_the_number_check_can_fail() -> None:
    assert _numbers("0.048 and 2\u20133.5 steps, 1e-15, 9.4%, 47 ± 28") == {
        "0.048", "2", "3.5", "1e-15", "9.4", "47", "28",
    }  # fmt: skip
    assert _numbers("0.0481") - _numbers("0.048") == {"0.0481"}
