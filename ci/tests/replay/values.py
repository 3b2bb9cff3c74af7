"""What the replay's selections evaluate to: host-staged files and directories, lazy containers.

Files and directories are content-addressed snapshots on the host (the engine uploads a
snapshot too). A container is a chain of filesystem nodes, each with a content key (parent
key + operation + input digests, like the engine's cache keys), plus a config (env, workdir,
mounts, secrets, ports) that, as in the engine, changes exec keys but makes no layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from replay.patterns import PatternMatcher, keep


def digest_of(*parts: Any) -> str:
    """A stable sha256 of JSON-able parts: the content key of one operation."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FileValue:
    """A file snapshot staged on the host; `digest` covers content and mode."""

    path: Path
    digest: str
    mode: int = 0o644
    name: str = ""


@dataclass(frozen=True)
class DirValue:
    """A directory snapshot staged on the host (never modified once made)."""

    path: Path
    digest: str


def tree_digest(root: Path) -> str:
    """Content digest of a staged tree: paths, kinds, modes, bytes and link targets."""
    items: list[tuple[str, str, int, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = base / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                items.append((rel, "l", mode, os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                items.append((rel, "d", mode, ""))
            else:
                items.append((rel, "f", mode, file_sha(p)))
    return digest_of("dir", items)


def copy_filtered(src: Path, dest: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
    """Copy `src` into `dest` keeping what the filters keep (the engine's host upload / withDirectory)."""
    inc, exc = PatternMatcher(include), PatternMatcher(exclude)
    prune = not any(p.exclusion for p in exc.patterns)
    dest.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(src):
        base = Path(dirpath)
        rel_base = base.relative_to(src).as_posix()
        if prune:
            dirnames[:] = [d for d in dirnames if not exc.matches(_join(rel_base, d))]
        for name in dirnames:
            rel = _join(rel_base, name)
            if (base / name).is_symlink():
                if keep(rel, inc, exc):
                    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(os.readlink(base / name), dest / rel)
            elif not inc or keep(rel, inc, exc):
                (dest / rel).mkdir(parents=True, exist_ok=True)
                shutil.copymode(base / name, dest / rel)
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
        for name in filenames:
            rel = _join(rel_base, name)
            if not keep(rel, inc, exc):
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            if (base / name).is_symlink():
                os.symlink(os.readlink(base / name), dest / rel)
            else:
                shutil.copy2(base / name, dest / rel)


def _join(base: str, name: str) -> str:
    return name if base == "." else f"{base}/{name}"


@dataclass(frozen=True)
class SecretValue:
    """A secret: its name and plaintext live only in this object (never in argv, layers or logs)."""

    name: str
    plaintext: str = field(repr=False)


@dataclass(frozen=True)
class CacheVolume:
    key: str


@dataclass(frozen=True)
class HostValue:
    """`dag.host()`: the machine running the tests."""


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int


@dataclass
class FsNode:
    """One filesystem state of a container: its content key, how it is made, its image once made.

    `op` is ("from", image_id) | ("build", image_id) | ("files", [entry…]) | ("exec", spec).
    """

    key: str
    parent: FsNode | None
    op: tuple[str, Any]
    image_id: str | None = None
    result: ExecResult | None = None


@dataclass(frozen=True)
class Config:
    """Image config the engine keeps next to the filesystem (no layer of its own)."""

    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    exposed: tuple[int, ...] = ()
    caches: tuple[tuple[str, str, str], ...] = ()  # (path, volume key, sharing mode)
    secret_env: tuple[tuple[str, SecretValue], ...] = ()
    secret_files: tuple[tuple[str, SecretValue, int], ...] = ()
    auths: tuple[tuple[str, str, SecretValue], ...] = ()
    temps: tuple[str, ...] = ()  # withMountedTemp paths: a tmpfs per exec, never in a layer
    bindings: tuple[tuple[str, HostService], ...] = ()  # withServiceBinding(alias, host service)

    def with_env(self, name: str, value: str) -> Config:
        env = [(k, v) for k, v in self.env if k != name] + [(name, value)]
        return replace(self, env=tuple(env))

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


@dataclass(frozen=True)
class ContainerValue:
    """A container: a filesystem node, its config, and the node of its last exec (for stdout)."""

    fs: FsNode | None
    config: Config = Config()
    last_exec: FsNode | None = None
    built: bool = False


@dataclass(frozen=True)
class HostService:
    """`dag.host().service(ports, host=…)`: the engine forwards each port to `host` on the caller's machine."""

    host: str
    ports: tuple[tuple[int, int], ...]  # (frontend, backend)


@dataclass(frozen=True)
class ServiceValue:
    container: ContainerValue
    args: tuple[str, ...]
    use_entrypoint: bool = False
