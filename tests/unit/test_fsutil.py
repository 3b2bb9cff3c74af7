"""Atomic writes leave ordinary permissions (0644/0755 under umask 022), never the temp file's 0600."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from mlship.fsutil import current_umask, ordinary_permissions, write_bytes, write_json, write_text, write_with


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_every_writer_gives_0644(tmp_path: Path) -> None:
    paths = [
        write_text(tmp_path / "a.md", "# report\n"),
        write_bytes(tmp_path / "b.bin", b"\x00"),
        write_json(tmp_path / "sub" / "c.json", {"x": 1}),
        write_with(tmp_path / "d.txt", lambda tmp: tmp.write_text("x")),
    ]
    assert [oct(mode(p)) for p in paths] == ["0o644"] * 4
    assert oct(mode(tmp_path / "sub")) == "0o755"


def test_the_umask_is_respected(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert oct(mode(write_text(tmp_path / "r.md", "x"))) == "0o640"
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_a_staged_folder_becomes_readable_and_keeps_executables(tmp_path: Path) -> None:
    staged = Path(tempfile.mkdtemp(dir=tmp_path))
    assert oct(mode(staged)) == "0o700"
    (staged / "inner").mkdir(mode=0o700)
    data = staged / "inner" / "model.pkl"
    data.write_bytes(b"x")
    data.chmod(0o600)
    script = staged / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o700)
    ordinary_permissions(staged)
    assert [oct(mode(p)) for p in (staged, staged / "inner", data, script)] == ["0o755", "0o755", "0o644", "0o755"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def boom(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        write_with(tmp_path / "x.txt", boom)
    assert list(tmp_path.iterdir()) == []
