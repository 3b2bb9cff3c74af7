"""Every container image the pipeline runs, pinned by tag AND digest, in one place.

Each digest was copied from a public repository that pins the same tag (found through a
code search of public GitHub files; the search index gives the file, quoted below) —
none is invented. Bump tag and digest together, from the registry, never one alone.
"""

from __future__ import annotations

# Matches `requires-python >= 3.11`; also the serving image's base (deployment/Dockerfile's
# BASE_IMAGE default is this same pin, and `build` passes it).
# Source: a public Dockerfile test fixture and a public ARG PYTHON_BASE_IMAGE line, both
# `python:3.11-slim@sha256:9c900dea…` (code-search file ids 69776103028, 61993210828); a public
# BuildKit log resolves `docker.io/library/python:3.11-slim@sha256:9c900dea…` (file id 61373040362).
PYTHON = "python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7"

# Source: two public Dockerfiles `COPY --from=ghcr.io/astral-sh/uv:0.9.24@sha256:816fdce3…`
# (code-search file ids 15594628421, 52805782136).
UV = "ghcr.io/astral-sh/uv:0.9.24@sha256:816fdce3387ed2142e37d2e56e1b1b97ccc1ea87731ba199dc8a25c04e4997c5"

# Source: a public TypeScript policy module `TRIVY_IMAGE = 'aquasec/trivy:0.68.2@sha256:05d01269…'`
# and a public CI script running the same reference (code-search file ids 61375672700, 69103007413).
TRIVY = "aquasec/trivy:0.68.2@sha256:05d0126976bdedcd0782a0336f77832dbea1c81b9cc5e4b3a5ea5d2ec863aca7"

# Source: the same policy module `HADOLINT_IMAGE` and several public Makefiles/Dockerfiles
# (`FROM docker.io/hadolint/hadolint:v2.12.0@sha256:30a8fd2e…`, code-search ids 61375672700, 2516785766).
HADOLINT = "hadolint/hadolint:v2.12.0@sha256:30a8fd2e785ab6176eed53f74769e04f125afb2f74a6c52aef7d463583b6d45e"

# The official kubectl image. Source: a public system-upgrade-controller config
# `SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE: registry.k8s.io/kubectl:v1.31.2@sha256:d31de546…`
# (code-search file id 4705075400).
KUBECTL = "registry.k8s.io/kubectl:v1.31.2@sha256:d31de5468fb5c0943358671e3dcf8e4d8281108027efd1f211262d09aedd5519"

ALL = {"python": PYTHON, "uv": UV, "trivy": TRIVY, "hadolint": HADOLINT, "kubectl": KUBECTL}
