"""docs/architecture.md's package map is generated from the module docstrings: it must match them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlship.docs_map import COMMAND, END, START, entries, main, render, render_map, summary

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"


def package(tmp_path: Path) -> Path:
    """A small package: a docstring per module, a subpackage, a file that is not Python."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text('"""The package."""\n')
    (root / "b.py").write_text('"""Module b: its first paragraph\nspans two lines.\n\nDetails nobody maps."""\n')
    (root / "a.py").write_text("'''Module a | with a pipe.'''\nimport os\n")
    (root / "sub" / "__init__.py").write_text('"""A subpackage."""\n')
    (root / "sub" / "c.py").write_text('"""Module c."""\n')
    (root / "notes.txt").write_text("not a module")
    return root


def test_the_committed_map_matches_the_modules() -> None:
    page = DOC.read_text(encoding="utf-8")
    assert page == render(page), f"the package map in docs/architecture.md is out of date: run `{COMMAND}`"


def test_every_module_of_the_package_is_in_the_map() -> None:
    page = DOC.read_text(encoding="utf-8")
    source = REPO / "src" / "mlship"
    modules = {p.relative_to(source.parent).with_suffix("").as_posix().replace("/", ".") for p in source.rglob("*.py")}
    names = {m.removesuffix(".__init__") for m in modules}
    for name in names:
        assert f"| `{name}` |" in page, f"{name} is not in the package map"
    assert "| `mlship.docs_map` |" in page and "| `mlship.deploy` |" in page


def test_entries_list_packages_before_their_parts_with_one_line_summaries(tmp_path: Path) -> None:
    root = package(tmp_path)
    assert entries(root) == [
        ("pkg", "The package."),
        ("pkg.a", "Module a \\| with a pipe."),
        ("pkg.b", "Module b: its first paragraph spans two lines."),
        ("pkg.sub", "A subpackage."),
        ("pkg.sub.c", "Module c."),
    ]
    table = render_map(root)
    assert table.startswith(START) and table.endswith(END)
    assert "| `pkg.sub.c` | Module c. |" in table


def test_a_module_without_a_docstring_cannot_be_mapped(tmp_path: Path) -> None:
    root = package(tmp_path)
    (root / "bare.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match=r"bare\.py has no module docstring .*python -m mlship\.docs_map"):
        entries(root)
    with pytest.raises(ValueError, match="no module docstring"):
        summary(root / "bare.py")


def test_a_page_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="no <!-- package-map:start --> … <!-- package-map:end --> block"):
        render("# Architecture\n\nno map here\n")


def test_check_fails_on_a_stale_map_and_passes_once_regenerated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "architecture.md"
    assert main(["--check", str(page)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mlship: error: {page} is missing (it holds the package map between {START} and {END})"
    )
    page.write_text(f"# A\n\nbefore\n\n{START}\n| `mlship.gone` | a module moved away |\n{END}\n\nafter\n")
    assert main(["--check", str(page)]) == 1
    assert f"is out of date (run `{COMMAND}`)" in capsys.readouterr().err
    assert main([str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# A\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "mlship.gone" not in text and "| `mlship.cli` |" in text
    assert main(["--check", str(page)]) == 0
    assert main([str(page)]) == 0 and page.read_text(encoding="utf-8") == text  # up to date: nothing to write
    page.write_text("# no markers\n")
    assert main(["--check", str(page)]) == 2
    assert "no <!-- package-map:start -->" in capsys.readouterr().err
