"""A real registry on 127.0.0.1 for `publish`: Debian's docker-registry with htpasswd auth.

The registry (distribution v2, /usr/bin/docker-registry) accepts only bcrypt htpasswd
entries; the hash is made by `crypt` with METHOD_BLOWFISH in the Debian base image's own
python3 (libxcrypt), so the host needs neither apache2-utils nor a bcrypt wheel. Config,
htpasswd and storage live in a temp dir; the process is stopped by whoever started it.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from replay import dockerops

BINARY = "/usr/bin/docker-registry"


@dataclass(frozen=True)
class Registry:
    """A running registry: where it listens and the one account it accepts."""

    host: str
    username: str
    password: str

    def pull(self, ref: str) -> subprocess.CompletedProcess[str]:
        """`docker pull ref` logged in with a throwaway DOCKER_CONFIG (the host's is never touched)."""
        import os

        with tempfile.TemporaryDirectory(prefix="mlship-replay-docker-") as cfg:
            env = {**os.environ, "DOCKER_CONFIG": cfg}
            subprocess.run(
                ["docker", "login", self.host, "--username", self.username, "--password-stdin"],
                input=self.password,
                text=True,
                capture_output=True,
                env=env,
                check=True,
                timeout=60,
            )
            return subprocess.run(
                ["docker", "pull", ref], capture_output=True, text=True, env=env, timeout=600, check=False
            )


def available() -> str | None:
    """None when the registry binary is installed, else why the publish tests cannot run."""
    return None if shutil.which(BINARY) else f"{BINARY} is missing (apt-get install docker-registry)"


def _bcrypt(password: str) -> str:
    script = "import crypt,sys; print(crypt.crypt(sys.stdin.read(), crypt.mksalt(crypt.METHOD_BLOWFISH)))"
    proc = dockerops.docker(
        "run",
        "--rm",
        "-i",
        "--network",
        "none",
        dockerops.base_image(),
        "python3",
        "-W",
        "ignore",
        "-c",
        script,
        stdin=password.encode(),
    )
    hashed = proc.stdout.decode().strip()
    if not hashed.startswith("$2"):
        raise RuntimeError("the base image's crypt produced no bcrypt hash")
    return hashed


@contextlib.contextmanager
def running(port: int) -> Iterator[Registry]:
    """Start the registry on 127.0.0.1:port with one htpasswd user; stop it afterwards."""
    username, password = "replay", secrets.token_urlsafe(18)
    with tempfile.TemporaryDirectory(prefix="mlship-replay-registry-") as tmp:
        root = Path(tmp)
        (root / "htpasswd").write_text(f"{username}:{_bcrypt(password)}\n")
        (root / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
            f"auth:\n  htpasswd:\n    realm: mlship-replay\n    path: {root / 'htpasswd'}\n"
        )
        log = (root / "registry.log").open("w")
        proc = subprocess.Popen([BINARY, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(port, proc, root / "registry.log")
            yield Registry(f"127.0.0.1:{port}", username, password)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            log.close()


def _wait(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1.0).status_code == 401:
                return
        time.sleep(0.2)
    raise RuntimeError(f"docker-registry did not answer on 127.0.0.1:{port}: {log.read_text()[-2000:]}")
