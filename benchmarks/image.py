"""The serving image: size, cold start (container start → /ready 200), rebuild with no change.

    uv run python benchmarks/image.py [--starts 3] [--cold]

Needs a Docker daemon (scripts/start-dockerd.sh) and, if mlship-base:bookworm is missing,
root + debootstrap to build it (its time is reported). Trains a small model with mlship,
builds deployment/Dockerfile on the Debian base exactly as the docker test tier does
(`--cold`: with --no-cache, i.e. what a fresh CI machine pays), rebuilds with no change,
then starts the image --read-only with a tmpfs /tmp `--starts` times and times /ready.
Also reports the bytes the repo sends as build context (.dockerignore applied by docker).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import save

from tests.conftest import make_project
from tests.docker import support

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="cold starts to time")
    parser.add_argument("--cold", action="store_true", help="first build with --no-cache")
    args = parser.parse_args()

    from mlship.deploy.image import docker_available
    from mlship.model.train import train
    from mlship.provenance import git_sha
    from mlship.settings import load_settings

    reason = docker_available()
    if reason:
        sys.exit(f"benchmarks/image.py needs Docker: {reason}")
    base_s = support.ensure_base_image()
    with tempfile.TemporaryDirectory(prefix="mlship-bench-image-") as tmp:
        project = make_project(Path(tmp) / "proj", rows=800, seed=1)
        train(load_settings(cwd=project), out=Path(tmp) / "out")
        context = support.make_context(Path(tmp) / "context", Path(tmp) / "out" / "model")
        sha, created = git_sha(REPO), support.now_rfc3339()
        tag = f"{support.SERVING_REPO}:bench"
        first = support.build_serving_image(context, tag, version="1", git_sha=sha, created=created, no_cache=args.cold)
        rebuild = support.build_serving_image(context, tag, version="1", git_sha=sha, created=created)
    size = int(support.inspect(tag)["Size"])
    starts: list[float] = []
    for _ in range(args.starts):
        begin = time.monotonic()
        with support.run_container(tag) as ctr:
            support.wait_ready(ctr.url, ctr.id)
            starts.append(time.monotonic() - begin)
    save(
        "image",
        {
            "command": "uv run python benchmarks/image.py"
            + (" --cold" if args.cold else "")
            + (f" --starts {args.starts}" if args.starts != 3 else ""),
            "base_image": support.BASE_IMAGE,
            "base_image_build_s": round(base_s, 1) if base_s else "cached (tag existed)",
            "build_s": round(first.seconds, 1),
            "build_cache": "none (--no-cache)" if args.cold else f"{first.cached_steps} steps from cache",
            "rebuild_no_change_s": round(rebuild.seconds, 2),
            "rebuild_steps_run": len(rebuild.steps_run),
            "rebuild_same_image_id": rebuild.image_id == first.image_id,
            "image_size_mb": round(size / 1e6, 1),
            "image_size_budget_mb": round(support.SIZE_BUDGET_BYTES / 1e6),
            "cold_start_to_ready_s": {
                "median": round(statistics.median(starts), 2),
                "min": round(min(starts), 2),
                "max": round(max(starts), 2),
                "runs": len(starts),
            },
            "build_context_mb": round(support.context_size_bytes(REPO) / 1e6, 2),
        },
    )


if __name__ == "__main__":
    main()
