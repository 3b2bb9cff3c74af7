"""Every relative link in the docs reaches a file, and every #anchor a heading (GitHub's slug) or an
`<a id>` of that file: a reader who follows a link from one page to another lands where it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [
    REPO / "README.md",
    REPO / "CONTRIBUTING.md",
    REPO / "benchmarks" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    found = {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}
    return found | set(re.findall(r'<a id="([^"]+)"></a>', text))


def links() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for match in LINK.finditer(text):
            target = match.group("target")
            if not re.match(r"[a-z]+:", target):
                found.append((page.relative_to(REPO).as_posix(), target))
    return found


def test_slugs_follow_githubs_rule() -> None:
    assert slug("The review comment (`mlship comment`)") == "the-review-comment-mlship-comment"
    assert slug("Sticky canaries (A/B by user)") == "sticky-canaries-ab-by-user"
    assert slug("`[tool.mlship.deploy]`") == "toolmlshipdeploy"
    assert slug("Debug a stage on the host") == "debug-a-stage-on-the-host"


def test_the_readme_links_every_docs_page() -> None:
    linked = {target.split("#")[0] for page, target in links() if page == "README.md"}
    pages = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert pages | {"CONTRIBUTING.md", "benchmarks/README.md"} <= linked


@pytest.mark.parametrize(("page", "target"), links(), ids=str)
def test_a_link_reaches_its_file_and_anchor(page: str, target: str) -> None:
    path, _, anchor = target.partition("#")
    dest = (REPO / page).parent / path if path else REPO / page
    assert dest.exists(), f"{page} links {target}: {dest.relative_to(REPO)} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{page} links {target}: no such heading or <a id> in {path or page}"


def test_the_readme_stays_a_front_page_with_the_two_quickstart_commands() -> None:
    """≤ 250 lines (the guides live in docs/), and the Quickstart block is exactly the two command
    lines that work on a fresh machine: the main job, and the test command .ci/run runs."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quickstart, re.S)
    assert block is not None
    assert block.group(1).splitlines() == ["pip install uv && uv run mlship run", 'uv run pytest -m "" --cov']
    assert 'uv run pytest -m "" --cov' in (REPO / ".ci" / "run").read_text(encoding="utf-8")
