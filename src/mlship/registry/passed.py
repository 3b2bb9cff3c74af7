"""Where a model version was verified live: recorded on the version as tags any runner can read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PASSED_TAG = "mlship.passed.{env}.{field}"
"""A release verified live in an environment, recorded on its model version (deploy.PassedRecord)."""
PASSED_FIELDS = ("environment", "image", "at", "git_sha", "ci_job", "namespace", "images")
PASSED_IMAGES_KEPT = 10
"""How many image digests that passed with one version stay listed (newest first)."""


@dataclass(frozen=True)
class PassedRecord:
    """Where a model version in one image was verified live: read by any runner from the registry."""

    name: str
    version: str
    environment: str
    image: str
    at: str
    """RFC 3339 UTC: when the environment verified it."""
    git_sha: str = "unknown"
    ci_job: str = "-"
    namespace: str = ""
    images: tuple[str, ...] = ()
    """Every image this version passed in (newest first), `image` included."""


def passed_from_tags(name: str, version: str, env: str, tags: Mapping[str, str]) -> PassedRecord | None:
    values = {f: tags.get(PASSED_TAG.format(env=env, field=f), "") for f in PASSED_FIELDS}
    if not values["image"] or not values["at"]:
        return None
    return PassedRecord(
        name=name,
        version=version,
        environment=env,
        image=values["image"],
        at=values["at"],
        git_sha=values["git_sha"] or "unknown",
        ci_job=values["ci_job"] or "-",
        namespace=values["namespace"],
        images=tuple(values["images"].split()) or (values["image"],),
    )
