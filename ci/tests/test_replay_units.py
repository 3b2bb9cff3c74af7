"""Engine-free parts of the replay tier (no marker: they run with the default suite).

The filter semantics decide what a replayed stage sees of the tree, and the Trivy stand-in
decides which scan command lines the replay accepts; both must behave like the originals.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from replay.patterns import CopyFilter, PatternMatcher
from replay.standins import TRIVY_SCRIPT, _tag_version
from replay.values import copy_filtered, tree_digest


@pytest.mark.parametrize(
    ("patterns", "path", "matched"),
    [
        ([".git"], ".git/config", True),  # a matching parent directory matches what is under it
        ([".git"], "sub/.git/config", False),  # patterns are anchored at the root
        (["**/__pycache__"], "src/pkg/__pycache__/x.pyc", True),
        (["**/__pycache__"], "__pycache__/x.pyc", True),
        (["*.py"], "a/b.py", False),  # `*` stops at `/`
        (["**/*.py"], "a/b.py", True),
        (["ci/sdk"], "ci/sdk/src/gen.py", True),
        (["src", "!src/keep.py"], "src/keep.py", False),  # the last matching pattern wins
        (["src", "!src/keep.py"], "src/drop.py", True),
        (["/data/*.csv"], "data/x.csv", True),
        (["b?t"], "bat", True),
        (["b[a-c]t"], "bdt", False),
    ],
)
def test_patterns_match_like_moby_patternmatcher(patterns: list[str], path: str, matched: bool) -> None:
    assert PatternMatcher(patterns).matches(path) is matched


def test_include_and_exclude_combine_like_the_engines_copy_filter(tmp_path: Path) -> None:
    for rel in ("dagger.json", "ci/src/m.py", "ci/sdk/gen.py", "ci/.venv/bin/py", "src/x.py", "README.md"):
        (tmp_path / "src-tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src-tree" / rel).write_text(rel)
    rules = CopyFilter(include=("dagger.json", "ci", "!ci/sdk", "!ci/.venv"))
    dest = tmp_path / "loaded"
    copy_filtered(tmp_path / "src-tree", dest, rules.include, rules.exclude)
    loaded = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert loaded == ["ci/src/m.py", "dagger.json"]
    assert rules.keeps("ci/src/m.py") and not rules.keeps("ci/sdk/gen.py")
    before = tree_digest(dest)
    (dest / "ci/src/m.py").write_text("changed")
    assert tree_digest(dest) != before


def test_stand_in_versions_come_from_the_pinned_tags() -> None:
    assert _tag_version("ghcr.io/astral-sh/uv:0.9.24@sha256:" + "0" * 64) == "0.9.24"
    assert _tag_version("hadolint/hadolint:v2.12.0@sha256:" + "0" * 64) == "2.12.0"
    with pytest.raises(ValueError, match="no version tag"):
        _tag_version("python@sha256:" + "0" * 64)


def _trivy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TRIVY_SCRIPT), *args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["image", "--input", "x.tar", "--fromat", "json"], "unknown flag: --fromat"),
        (["image", "--input", "x.tar", "--format", "xml"], 'invalid argument "xml"'),
        (["image", "--input", "x.tar", "--severity", "SEVERE"], 'invalid argument "SEVERE"'),
        (["image"], "requires exactly one of --input"),
        (["fs", "."], 'unknown command "fs"'),
        (["image", "--input"], "flag needs an argument: --input"),
    ],
)
def test_the_trivy_stand_in_refuses_what_trivy_refuses(argv: list[str], error: str) -> None:
    proc = _trivy(*argv)
    assert proc.returncode == 1
    assert error in proc.stderr


def _docker_archive(path: Path, labels: dict[str, str]) -> Path:
    """A minimal `docker save` archive: one layer with os-release and one Python distribution."""
    layer = path.parent / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        for name, body in (
            ("etc/os-release", 'ID=debian\nVERSION_ID="12"\n'),
            ("opt/venv/lib/python3.11/site-packages/mlship-0.1.0.dist-info/METADATA", "Name: mlship\n"),
        ):
            data = body.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    config = {"config": {"Labels": labels}, "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}}
    cfg = path.parent / ("a" * 64 + ".json")
    cfg.write_text(json.dumps(config))
    manifest = path.parent / "manifest.json"
    manifest.write_text(json.dumps([{"Config": cfg.name, "RepoTags": ["x:1"], "Layers": ["l1/layer.tar"]}]))
    with tarfile.open(path, "w") as tar:
        tar.add(manifest, "manifest.json")
        tar.add(cfg, cfg.name)
        tar.add(layer, "l1/layer.tar")
    return path


@pytest.mark.parametrize("fmt", ["json", "sarif", "cyclonedx"])
def test_the_trivy_stand_in_reports_on_the_image_it_was_given(tmp_path: Path, fmt: str) -> None:
    archive = _docker_archive(tmp_path / "image.tar", {"io.mlship.model.version": "3"})
    out = tmp_path / f"report.{fmt}"
    proc = _trivy("image", "--input", str(archive), "--format", fmt, "--output", str(out), "--ignore-unfixed")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    if fmt == "json":
        assert report["SchemaVersion"] == 2
        assert report["Metadata"]["ImageID"] == "sha256:" + "a" * 64
        assert report["Metadata"]["OS"] == {"Family": "debian", "Name": "12"}
        assert report["Metadata"]["ImageConfig"]["config"]["Labels"] == {"io.mlship.model.version": "3"}
        assert not any("Vulnerabilities" in r for r in report["Results"])
    elif fmt == "sarif":
        assert report["version"] == "2.1.0" and report["runs"][0]["results"] == []
    else:
        assert report["bomFormat"] == "CycloneDX"
        assert [c["name"] for c in report["components"]] == ["mlship"]
