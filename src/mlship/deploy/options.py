"""What a deploy may be asked to do, checked before anything runs (usage errors, exit 2)."""

from __future__ import annotations

import os

from mlship.deploy.targets.base import Target
from mlship.errors import ConfigError
from mlship.traffic.sticky import parse_sticky

ENVS = ("staging", "production")
STRATEGIES = ("bluegreen", "canary", "shadow")
APPROVAL_VARS = ("MLSHIP_APPROVE",)


def check_env(env: str) -> None:
    """An environment this project deploys to."""
    if env not in ENVS:
        raise ConfigError(f"unknown environment {env!r}", hint=f"use one of: {', '.join(ENVS)}")


def require_approval(env: str, approve: bool) -> None:
    """Production needs an explicit yes: `--approve` or MLSHIP_APPROVE=1 (set by a CI approval gate)."""
    check_env(env)
    if env == "production" and not approve:
        if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes") for v in APPROVAL_VARS):
            return
        raise ConfigError(
            "a production deploy needs approval",
            hint="pass --approve, or set MLSHIP_APPROVE=1 in an approved CI environment",
        )


def check_options(target: Target, strategy: str, *, weight: int, sample: float, sticky: str | None) -> None:
    """The strategy and its options, and whether `target` can run them."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}", hint=f"use one of: {', '.join(STRATEGIES)}")
    if strategy == "canary" and not 1 <= weight <= 99:
        raise ConfigError(f"canary weight {weight} is out of range", hint="use --weight between 1 and 99")
    if strategy == "shadow":
        if not 0.0 < sample <= 1.0:
            raise ConfigError(f"shadow sample {sample:g} is out of range", hint="use --sample in (0, 1], e.g. 0.1")
        if not target.supports_shadow:
            raise ConfigError(f"the {target.name} target cannot run a shadow", hint="use local or kubernetes")
    if sticky is not None:
        if strategy != "canary":
            raise ConfigError("--sticky-key routes a canary split", hint="add --strategy canary")
        try:
            parse_sticky(sticky)
        except ValueError as exc:
            raise ConfigError(str(exc), hint="use header:X-User-Id or field:customer_id") from None
        if not target.supports_sticky:
            raise ConfigError(
                f"the {target.name} target cannot route by key",
                hint="sticky routing needs the local router; a Service splits by pod, not by key",
            )
