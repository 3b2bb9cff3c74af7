"""The replay tier's session: one interpreter, the stand-in table, a registry, the timings.

Both test files share one `Tier` per pytest session (kept in `config.stash`, cleaned up by
`config.add_cleanup`), so stand-ins are built and the registry started once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import dagger
import pytest
from dagger import dag
from ml_pipeline.main import MlPipeline

from replay import registry, standins
from replay.engine import replaying
from replay.interpreter import Interpreter
from replay.patterns import PatternMatcher
from tests.conftest import tier_unavailable
from tests.docker import support

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")
_KEY = pytest.StashKey["Tier"]()


@dataclass
class Tier:
    """What the replay tests share: the interpreter, the registry (started on first use), timings."""

    interp: Interpreter
    _registry: registry.Registry | None = None
    _stop_registry: Callable[[], None] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run an async body with every dagger-io await going through the interpreter."""

        async def body() -> T:
            with replaying(self.interp):
                return await fn()

        return anyio.run(body)

    def registry(self) -> registry.Registry:
        if self._registry is None:
            reason = registry.available()
            if reason is not None:
                pytest.fail(f"publish cannot be replayed: {reason}")
            manager = registry.running(support.free_port())
            self._registry = manager.__enter__()

            def stop() -> None:
                manager.__exit__(None, None, None)

            self._stop_registry = stop
        return self._registry

    def close(self) -> None:
        self.interp.stop_services()
        if self._stop_registry is not None:
            self._stop_registry()
        out = os.environ.get("MLSHIP_REPLAY_TIMINGS")
        if out:
            payload = {
                "tests": self.timings,
                "terminals": [t.__dict__ for t in self.interp.terminals],
                "execs_run": self.interp.execs_run,
                "execs_cached": self.interp.execs_cached,
                "substitutions": self.interp.substitutions,
            }
            Path(out).write_text(json.dumps(payload, indent=2) + "\n")


def docker_reason() -> str | None:
    """Why the tier cannot run here (None when a Docker daemon answers): the docker tier's test."""
    from mlship.deploy.image import docker_available

    reason: str | None = docker_available()
    return reason


def get(config: pytest.Config) -> Tier:
    """The session's tier, made on first use (skips the test with the reason when no daemon answers).

    Fails instead when MLSHIP_REQUIRE_TIERS names replay (.ci/run sets it).
    """
    if _KEY in config.stash:
        return config.stash[_KEY]
    reason = docker_reason()
    if reason is not None:
        why = f"replay tier needs a Docker daemon: {reason} (start one with scripts/start-dockerd.sh)"
        tier_unavailable("replay", why)
    if not support.image_exists(support.BASE_IMAGE):
        support.ensure_base_image()
    workdir = Path(tempfile.mkdtemp(prefix="mlship-replay-"))
    interp = Interpreter(
        workdir=workdir,
        standins=standins.by_address(),
        ensure_standin=standins.ensure,
        namespace=os.environ.get("MLSHIP_REPLAY_NAMESPACE", "mlship-replay-state"),
        cache_dir=Path(os.environ.get("MLSHIP_REPLAY_CACHE") or Path.home() / ".cache" / "mlship-replay"),
    )
    tier = Tier(interp)
    config.stash[_KEY] = tier
    config.add_cleanup(tier.close)
    config.add_cleanup(lambda: shutil.rmtree(workdir, ignore_errors=True))
    _print_table(config)
    return tier


def _print_table(config: pytest.Config) -> None:
    """The stand-in table on the terminal, past pytest's output capture (shown with -q too)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    guard = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    with guard:
        reporter.write_line("")
        for line in standins.render_table().splitlines():
            reporter.write_line(line)


def source_argument(root: Path) -> dagger.Directory:
    """`source` as the engine loads its DefaultPath: the host dir, minus the Ignore patterns.

    The engine (core/modfunc.go loadContextualArg, v0.21.8) loads a contextual Directory as
    `host.directory(<context>/<defaultPath>, exclude=<Ignore>)`; no .gitignore is applied.
    """
    default_path, ignore = source_annotation()
    path = root / default_path.lstrip("/")
    return dag.host().directory(str(path), exclude=list(ignore))


def source_annotation() -> tuple[str, list[str]]:
    """The DefaultPath and Ignore patterns MlPipeline declares on `source`."""
    hints = typing.get_type_hints(MlPipeline, include_extras=True)
    default_path, ignore = "", []
    for meta in getattr(hints["source"], "__metadata__", ()):
        if isinstance(meta, dagger.DefaultPath):
            default_path = meta.from_context
        elif isinstance(meta, dagger.Ignore):
            ignore = list(meta.patterns)
    return default_path, ignore


def pipeline(root: Path = REPO) -> MlPipeline:
    """The module's main object, constructed as `dagger call` constructs it for a checkout at `root`."""
    return MlPipeline(source=source_argument(root))  # type: ignore[call-arg]  # the dataclass field


def module_files(root: Path = REPO) -> list[str]:
    """The files the engine loads as the module itself: dagger.json + source dir + `include`, minus .gitignore.

    core/schema/modulesource.go (v0.21.8): host.directory(context, include=[dagger.json,
    <source>, *include], gitignore=true). Git itself decides what .gitignore ignores.
    """
    config = json.loads((root / "dagger.json").read_text())
    patterns = ["dagger.json", config.get("source", "."), *config.get("include", [])]
    matcher = PatternMatcher(patterns)
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(p for p in tracked.split("\0") if p and matcher.matches(p))


def host_file(path: Path) -> dagger.File:
    return dag.host().file(str(path))


def secret(name: str, value: str) -> dagger.Secret:
    return dag.set_secret(name, value)
