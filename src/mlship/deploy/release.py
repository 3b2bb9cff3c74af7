"""What was deployed where and when: the release record and the per-environment history.

A release is pinned once (alias → version) and never re-resolved; the history keeps the
last releases so `mlship rollback --to VERSION` can redeploy any of them exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlship.deploy.lock import deploy_lock
from mlship.errors import ConfigError
from mlship.fsutil import write_json
from mlship.provenance import git_sha

if TYPE_CHECKING:
    from mlship.registry import Registry
    from mlship.settings import Settings

COLORS = ("blue", "green")


def other(color: str) -> str:
    """The opposite color: where the next release goes."""
    return "green" if color == "blue" else "blue"


@dataclass(frozen=True)
class Release:
    """One model version bound for (or running on) one color."""

    ref: str
    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    image: str | None = None
    git_sha: str = "unknown"
    color: str = ""
    env: str = "staging"
    target: str = "local"
    deployed_at: float = 0.0
    outcome: str = "pending"
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.name and self.version else self.uri

    def with_(self, **changes: Any) -> Release:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Release:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class DeployState:
    """The persisted picture of one environment: which color is live, what runs on each."""

    env: str
    target: str = "local"
    live: str | None = None
    colors: dict[str, Release] = field(default_factory=dict)
    previous_until: float | None = None
    history: list[Release] = field(default_factory=list)
    retire: dict[str, Any] | None = None
    """The process that stops the previous color when the window ends: pid, start time, color, until."""
    pending: dict[str, Any] | None = None
    """A deploy's intent, written before it acts: {color, release, step, previous}. A deploy
    that finishes clears it; one that crashed leaves it for the next command to reconcile."""
    shadow: dict[str, Any] | None = None
    """A running shadow: {color, sample, warm (the release parked behind it), since}. Written
    before the target copies a single request to it."""
    canary: dict[str, Any] | None = None
    """A running canary: {color, uri, weight, baseline (its color's counters when its share began)},
    so a promotion can judge the canary's own recorded errors before it moves any weight."""

    @classmethod
    def from_dict(cls, raw: object, *, env: str, target: str = "local") -> DeployState:
        """The state as persisted (a file or a ConfigMap), shape-checked: ValueError/TypeError if not."""
        if not isinstance(raw, dict):
            raise ValueError(f"a {type(raw).__name__}, not an object")
        return cls(
            env=env,
            target=str(raw.get("target", target)),
            live=_color_or_none(raw.get("live")),
            colors={_color(c): Release.from_dict(r) for c, r in (raw.get("colors") or {}).items()},
            previous_until=_number_or_none(raw.get("previous_until")),
            retire=_dict_or_none(raw.get("retire")),
            pending=_dict_or_none(raw.get("pending")),
            shadow=_dict_or_none(raw.get("shadow")),
            canary=_dict_or_none(raw.get("canary")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "target": self.target,
            "live": self.live,
            "colors": {c: r.to_dict() for c, r in self.colors.items()},
            "previous_until": self.previous_until,
            "retire": self.retire,
            "pending": self.pending,
            "shadow": self.shadow,
            "canary": self.canary,
        }


class ReleaseStore(Protocol):
    """Where one environment's release state lives, and the lock that serialises its deploys.

    The local target keeps files (StateStore); the kubernetes target keeps a ConfigMap and a
    Lease in the cluster (mlship.deploy.targets.cluster_state), so any CI runner sees the same.
    """

    dir: Path
    """A local working directory of this environment (logs, the retirement spec)."""

    def load(self) -> DeployState:
        """The state and the history as they are now."""

    def save(self, state: DeployState) -> None:
        """Persist the state (not the history)."""

    def record(self, release: Release) -> None:
        """Append a release to the history, keeping the configured number."""

    def lock(self) -> AbstractContextManager[object]:
        """Hold the deploy lock of this environment for the block (InfraError if another holds it)."""


class StateStore:
    """`.mlship/deploy/<env>/`: state.json (live color, colors) and history.json (releases)."""

    def __init__(self, root: Path, env: str, *, keep: int = 10) -> None:
        self.dir = root / "deploy" / env
        self.env = env
        self.keep = keep

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def history_file(self) -> Path:
        return self.dir / "history.json"

    def load(self) -> DeployState:
        raw = _read(self.state_file)
        raw = {} if raw is None else raw
        try:
            state = DeployState.from_dict(raw, env=self.env)
        except (AttributeError, TypeError, ValueError) as exc:
            raise _bad_shape(self.state_file, exc) from None
        try:
            history = _read(self.history_file)
            if history is not None and not isinstance(history, list):
                raise ValueError(f"a {type(history).__name__}, not a list")
            state.history = [Release.from_dict(r) for r in (history or [])]
        except (AttributeError, TypeError, ValueError) as exc:
            raise _bad_shape(self.history_file, exc) from None
        return state

    def save(self, state: DeployState) -> None:
        write_json(self.state_file, state.to_dict())

    def record(self, release: Release) -> None:
        """Append a release to the history (newest last), keeping the last `keep` entries."""
        history = [Release.from_dict(r) for r in (_read(self.history_file) or [])]
        history.append(release.with_(deployed_at=release.deployed_at or time.time()))
        write_json(self.history_file, [r.to_dict() for r in history[-self.keep :]])

    def lock(self) -> AbstractContextManager[object]:
        """`deploy.lock` in the state directory: a pid file taken over when its process is gone."""
        return deploy_lock(self.dir)


def find_release(history: list[Release], version: str) -> Release:
    """The newest successfully deployed release of `version` (a version number or a URI)."""
    for release in reversed(history):
        if release.outcome == "live" and version in (release.version, release.uri, release.ref):
            return release
    known = sorted({r.version or r.uri for r in history if r.outcome == "live"})
    raise ConfigError(
        f"version {version!r} is not in the deploy history",
        hint=f"redeployable: {', '.join(known) or 'none yet'}; or deploy it with `mlship deploy --model`",
    )


def resolve_release(
    registry: Registry, settings: Settings, model_ref: str, *, image: str | None, env: str, target: str
) -> Release:
    """A release pinned once: an alias becomes the version it names right now, with the git sha."""
    resolved = registry.resolve(model_ref)
    return Release(
        ref=model_ref,
        uri=resolved.uri,
        name=resolved.name,
        version=resolved.version,
        run_id=resolved.run_id,
        image=image,
        git_sha=git_sha(settings.root),
        env=env,
        target=target,
    )


@dataclass(frozen=True)
class RollbackTarget:
    """What `mlship rollback` (without --to) brings back."""

    release: Release
    color: str | None
    """The warm previous color it switches to in one step; None: a full blue-green deploy of `release`."""

    @property
    def warm(self) -> bool:
        return self.color is not None


def rollback_target(state: DeployState, running: Callable[[str], bool], to: str | None = None) -> RollbackTarget | None:
    """The one rule for what a rollback brings back (`Controller.rollback` acts on it, `status` shows it).

    Without `to`: the previous color when it still runs the release that was live before (one
    switch); else the newest other release the history records as live (a full deploy); None
    when nothing is live or nothing else ever was. With `to` (a version or URI): the previous
    color if it runs that release, else that release from the history (ConfigError if absent).
    A running canary or shadow is ended by a rollback first (see Controller.rollback).
    """
    prev = other(state.live) if state.live else None
    warm = state.colors.get(prev) if prev is not None and prev in state.colors and running(prev) else None
    if to is not None:
        if warm is not None and to in (warm.version, warm.uri):
            return RollbackTarget(warm, prev)
        return RollbackTarget(find_release(state.history, to), None)
    if warm is not None and warm.outcome == "live":
        return RollbackTarget(warm, prev)
    current = state.colors.get(state.live) if state.live else None
    for release in reversed(state.history):
        if release.outcome == "live" and current is not None and release.uri != current.uri:
            return RollbackTarget(release, None)
    return None


def _color(value: Any) -> str:
    if value not in COLORS:
        raise ValueError(f"{value!r} is not a color (blue or green)")
    return str(value)


def _color_or_none(value: Any) -> str | None:
    return None if value is None else _color(value)


def _number_or_none(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not an object")
    return value


def _bad_shape(path: Path, exc: Exception) -> ConfigError:
    """A state file mlship did not write (edited by hand, another tool): bad input, exit 2."""
    return ConfigError(
        f"{path} is not a deploy state file mlship wrote ({exc})",
        hint="restore it, or move it aside and run `mlship down` for this --env, then deploy again",
    )


def _read(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is unreadable: {exc}", hint="fix or delete the file") from None
