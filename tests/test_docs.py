"""The documents users read stay consistent with the repository: links resolve, and the
README's set-up commands are the ones CI and the bundled example use."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _relative_links(text):
    """Markdown link and image targets that point into the repository (no URLs, no anchors)."""
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        target = target.split("#", 1)[0]
        if target and not re.match(r"[a-z]+:", target):
            yield target


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document):
    missing = [t for t in _relative_links(document.read_text())
               if not (document.parent / t).exists()]
    assert not missing, f"{document.name} links to missing paths: {missing}"


def _readme_blocks():
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_ci_runs_the_readme_test_command():
    test_command = _readme_blocks()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == test_command


def test_readme_main_job_uses_the_bundled_example():
    main_job = _readme_blocks()[0]
    example = re.search(r"kdecode restore (\S+)", main_job).group(1)
    assert (ROOT / example).is_file()


def test_readme_quality_table_is_delimited_for_the_benchmark():
    # benchmarks/quality.py --readme rewrites what lies between the two markers
    assert (ROOT / "README.md").read_text().count("<!-- quality-table -->") == 2
