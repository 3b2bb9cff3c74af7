"""The pipeline as Dagger functions: thin `@function`s over undecorated helpers.

Each helper (`_lint`, `_train`, …) returns a lazy Dagger object and runs exactly the
`mlship …` command a developer runs on the host, so a failing stage is debugged with the
same command outside the engine. The helpers are what the engine-free tests walk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

import anyio
import dagger
from dagger import DefaultPath, Doc, Ignore, check, dag, function, object_type

from . import images

SRC = "/src"
VENV = "/opt/venv"
OUT = "/out"
DATA = "/work/data.parquet"
REPORTS = "/reports"
DEFAULT_MODEL_NAME = "card-fraud"

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

    def _base(self) -> dagger.Container:
        """Pinned python + pinned uv + `uv sync --frozen`, dependencies cached across runs."""
        uv = dag.container().from_(images.UV).file("/uv")
        return (
            dag.container()
            .from_(self.python_image)
            .with_file("/usr/local/bin/uv", uv)
            .with_mounted_cache("/root/.cache/uv", dag.cache_volume("mlship-uv"))
            .with_env_variable("UV_LINK_MODE", "copy")
            .with_env_variable("UV_PROJECT_ENVIRONMENT", VENV)
            .with_env_variable("PATH", f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .with_env_variable("MLFLOW_DISABLE_TELEMETRY", "true")
            .with_workdir(SRC)
            .with_file(f"{SRC}/pyproject.toml", self.source.file("pyproject.toml"))
            .with_file(f"{SRC}/uv.lock", self.source.file("uv.lock"))
            .with_exec(["uv", "sync", "--frozen", "--no-install-project"])
            .with_directory(SRC, self.source)
            .with_exec(["uv", "sync", "--frozen"])
        )

    def _with_data(self, ctr: dagger.Container, data: dagger.File | None) -> dagger.Container:
        """The given dataset, or the deterministic synthetic one (the repo commits no data)."""
        if data is not None:
            return ctr.with_file(DATA, data)
        return ctr.with_exec(["mlship", "data", "synth", "--rows", "20000", "--seed", "42", "--out", DATA])

    def _with_mlflow(
        self, ctr: dagger.Container, tracking_uri: str, tracking_token: dagger.Secret | None
    ) -> dagger.Container:
        if tracking_uri:
            ctr = ctr.with_env_variable("MLFLOW_TRACKING_URI", tracking_uri)
        if tracking_token is not None:
            ctr = ctr.with_secret_variable("MLFLOW_TRACKING_TOKEN", tracking_token)
        return ctr

    def _lint(self) -> dagger.Container:
        hadolint = (
            dag.container()
            .from_(images.HADOLINT)
            .with_file("/Dockerfile", self.source.file("deployment/Dockerfile"))
            .with_exec(["/bin/hadolint", "/Dockerfile"])
        )
        return (
            self._base()
            .with_exec(["ruff", "check", "."])
            .with_exec(["ruff", "format", "--check", "."])
            .with_exec(["mypy", "--strict"])
            # a file out of the hadolint container makes its (failing) exec part of this plan
            .with_file("/tmp/hadolint.ok", hadolint.file("/Dockerfile"))
        )

    def _test(self) -> dagger.Container:
        return self._base().with_exec(
            ["pytest", "--junitxml", f"{REPORTS}/junit.xml", f"--cov-report=xml:{REPORTS}/coverage.xml"]
        )

    def _validate(self, data: dagger.File | None) -> dagger.Container:
        return self._with_data(self._base(), data).with_exec(
            ["mlship", "validate", "--data", DATA, "--report-dir", f"{OUT}/validate"]
        )

    def _train(
        self, data: dagger.File | None, tracking_uri: str, tracking_token: dagger.Secret | None
    ) -> dagger.Container:
        ctr = self._with_mlflow(self._with_data(self._base(), data), tracking_uri, tracking_token)
        return ctr.with_exec(["mlship", "train", "--data", DATA, "--out", f"{OUT}/train"])

    def _train_dir(
        self, data: dagger.File | None, tracking_uri: str, tracking_token: dagger.Secret | None
    ) -> dagger.Directory:
        ctr = self._train(data, tracking_uri, tracking_token)
        out = ctr.directory(f"{OUT}/train")
        # With no tracking server the run lives in the embedded store: hand it back too.
        return out if tracking_uri else out.with_directory("mlflow", ctr.directory(f"{SRC}/.mlship"))

    def _gate(
        self,
        model: dagger.Directory,
        data: dagger.File | None,
        tracking_uri: str,
        tracking_token: dagger.Secret | None,
        no_champion: bool,
    ) -> dagger.Container:
        ctr = self._with_mlflow(self._with_data(self._base(), data), tracking_uri, tracking_token)
        args = ["mlship", "gate", "--candidate", "/work/candidate", "--data", DATA, "--report-dir", f"{OUT}/gate"]
        if no_champion:
            args.append("--no-champion")
        return ctr.with_directory("/work/candidate", model).with_exec(args)

    def _build(
        self, model: dagger.Directory, git_sha: str, model_name: str, model_version: str, created: str
    ) -> dagger.Container:
        """The serving image from deployment/Dockerfile — the same file users build by hand."""
        args = [
            dagger.BuildArg(name="BASE_IMAGE", value=images.PYTHON),
            dagger.BuildArg(name="GIT_SHA", value=git_sha),
            dagger.BuildArg(name="MODEL_NAME", value=model_name),
            dagger.BuildArg(name="MODEL_VERSION", value=model_version),
            dagger.BuildArg(name="CREATED", value=created),
        ]
        return self.source.with_directory("build/model", model).docker_build(
            dockerfile="deployment/Dockerfile", build_args=args
        )

    def _trivy(self, image: dagger.Container, fmt: str) -> dagger.Container:
        return (
            dag.container()
            .from_(images.TRIVY)
            .with_mounted_cache("/root/.cache/trivy", dag.cache_volume("mlship-trivy-db"))
            .with_env_variable("TRIVY_NO_PROGRESS", "true")
            .with_file("/scan/image.tar", image.as_tarball())
            .with_exec(
                ["trivy", "image", "--input", "/scan/image.tar", "--format", fmt, "--output", f"/scan/report.{fmt}"]
            )
        )

    def _scan_gate(self, report: dagger.File, severity: str, ignore_unfixed: bool) -> dagger.Container:
        args = ["mlship", "scan-gate", "--report", f"{REPORTS}/trivy.json", "--severity", severity]
        args += ["--ignore-file", ".trivyignore", "--report-dir", REPORTS]
        if ignore_unfixed:
            args.append("--ignore-unfixed")
        return self._base().with_file(f"{REPORTS}/trivy.json", report).with_exec(args)

    def _kube(self, kubeconfig: dagger.Secret) -> dagger.Container:
        """The base plus a pinned kubectl; the kubeconfig is a mounted secret, never a file or arg."""
        kubectl = dag.container().from_(images.KUBECTL).file("/bin/kubectl")
        return (
            self._base()
            .with_file("/usr/local/bin/kubectl", kubectl)
            .with_mounted_secret("/root/.kube/config", kubeconfig, mode=0o400)
            .with_env_variable("KUBECONFIG", "/root/.kube/config")
            # cache="never" only skips the function cache; this busts the layer cache too, so a
            # deploy or rollback always talks to the cluster.
            .with_env_variable("MLSHIP_RUN_AT", dt.datetime.now(dt.UTC).isoformat())
        )

    def _deploy(
        self, kubeconfig: dagger.Secret, model: str, env: str, namespace: str, approve: bool, image: str
    ) -> dagger.Container:
        args = ["mlship", "deploy", "--model", model, "--target", "kubernetes", "--env", env, "--namespace", namespace]
        if approve:
            args.append("--approve")
        if image:
            args += ["--image", image]
        return self._kube(kubeconfig).with_exec(args)

    def _rollback(self, kubeconfig: dagger.Secret, env: str, namespace: str) -> dagger.Container:
        return self._kube(kubeconfig).with_exec(
            ["mlship", "rollback", "--target", "kubernetes", "--env", env, "--namespace", namespace]
        )

    def _serve(self, model: dagger.Directory) -> dagger.Service:
        return (
            self._base()
            .with_directory("/opt/model", model)
            .with_exposed_port(8000)
            .as_service(args=["mlship", "serve", "--model", "/opt/model", "--host", "0.0.0.0", "--port", "8000"])
        )

    def _monitor(self, reference: dagger.File, current: dagger.File) -> dagger.Container:
        return (
            self._base()
            .with_file("/work/reference.parquet", reference)
            .with_file("/work/current.parquet", current)
            .with_exec(
                [
                    "mlship",
                    "drift",
                    "--reference",
                    "/work/reference.parquet",
                    "--current",
                    "/work/current.parquet",
                    "--report-dir",
                    f"{OUT}/drift",
                ],
                expect=dagger.ReturnType.ANY,
            )
        )

    def _batch_predict(self, model: dagger.Directory, input_file: dagger.File, name: str) -> dagger.Container:
        return (
            self._base()
            .with_directory("/work/model", model)
            .with_file(f"/work/{name}", input_file)
            .with_exec(
                [
                    "mlship",
                    "predict-batch",
                    "--model",
                    "/work/model",
                    "--input",
                    f"/work/{name}",
                    "--output",
                    f"{OUT}/predictions.parquet",
                ]
            )
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
    async def test(self) -> str:
        """The pytest suite with coverage (fails under the coverage floor)."""
        return await self._test().stdout()

    @function
    def test_report(self) -> dagger.Directory:
        """JUnit XML and coverage XML of the test run, as a directory (junit.xml, coverage.xml)."""
        return self._test().directory(REPORTS)

    @function
    @check
    async def validate_data(
        self,
        data: Annotated[dagger.File | None, Doc("CSV or Parquet dataset (default: synthetic, seed 42)")] = None,
    ) -> str:
        """Validate the dataset against data/expectations (exit 1 in the log when invalid)."""
        return await self._validate(data).stdout()

    @function
    def train(
        self,
        data: Annotated[dagger.File | None, Doc("CSV or Parquet training data (default: synthetic, seed 42)")] = None,
        tracking_uri: Annotated[str, Doc("MLflow tracking URI (default: embedded store, returned in mlflow/)")] = "",
        tracking_token: Annotated[dagger.Secret | None, Doc("MLflow token, set as MLFLOW_TRACKING_TOKEN")] = None,
    ) -> dagger.Directory:
        """Train the model: returns model/, metrics.json and, without a tracking server, mlflow/."""
        return self._train_dir(data, tracking_uri, tracking_token)

    @function
    def gate(
        self,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        data: Annotated[dagger.File | None, Doc("Evaluation data (default: synthetic, seed 42)")] = None,
        tracking_uri: Annotated[str, Doc("MLflow tracking URI holding the champion")] = "",
        tracking_token: Annotated[dagger.Secret | None, Doc("MLflow token, set as MLFLOW_TRACKING_TOKEN")] = None,
        no_champion: Annotated[bool, Doc("Gate on absolute thresholds only (first release)")] = False,
    ) -> dagger.Directory:
        """Quality gate of the candidate against thresholds and the champion: the gate report directory."""
        return self._gate(self._model(model), data, tracking_uri, tracking_token, no_champion).directory(f"{OUT}/gate")

    @function
    def build(
        self,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        git_sha: Annotated[str, Doc("Commit the image is built from (label + /version)")] = "unknown",
        model_name: Annotated[str, Doc("Registered model name")] = DEFAULT_MODEL_NAME,
        model_version: Annotated[str, Doc("Registered model version")] = "0",
        created: Annotated[str, Doc("RFC 3339 build time (default: now)")] = "",
    ) -> dagger.Container:
        """The serving image, built from deployment/Dockerfile with the model baked in."""
        stamp = created or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._build(self._model(model), git_sha, model_name, model_version, stamp)

    @_function_with_cache("session")
    async def scan(
        self,
        severity: Annotated[str, Doc("Fail on findings at or above: LOW, MEDIUM, HIGH, CRITICAL")] = "HIGH",
        ignore_unfixed: Annotated[bool, Doc("Skip vulnerabilities with no fixed version")] = False,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
    ) -> str:
        """Trivy on the built image tarball, gated by `mlship scan-gate` (honours .trivyignore)."""
        image = self._build(self._model(model), "unknown", DEFAULT_MODEL_NAME, "0", "")
        report = self._trivy(image, "json").file("/scan/report.json")
        return await self._scan_gate(report, severity, ignore_unfixed).stdout()

    @_function_with_cache("session")
    def scan_report(
        self,
        format: Annotated[str, Doc("sarif, json or cyclonedx")] = "sarif",
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
    ) -> dagger.File:
        """The raw Trivy report of the serving image as a file (SARIF for code scanning)."""
        if format not in ("sarif", "json", "cyclonedx"):
            raise ValueError(f"unsupported format {format!r}: use sarif, json or cyclonedx")
        image = self._build(self._model(model), "unknown", DEFAULT_MODEL_NAME, "0", "")
        return self._trivy(image, format).file(f"/scan/report.{format}")

    @_function_with_cache("never")
    async def publish(
        self,
        address: Annotated[str, Doc("Image reference to push, e.g. <registry>/<org>/mlship-serving:<sha>")],
        username: Annotated[str, Doc("Registry user")],
        password: Annotated[dagger.Secret, Doc("Registry password or token")],
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
        git_sha: Annotated[str, Doc("Commit the image is built from")] = "unknown",
    ) -> str:
        """Push the serving image; returns the reference with its digest."""
        image = self._build(self._model(model), git_sha, DEFAULT_MODEL_NAME, "0", "")
        return await image.with_registry_auth(address, username, password).publish(address)

    @_function_with_cache("never")
    async def deploy(
        self,
        kubeconfig: Annotated[dagger.Secret, Doc("kubeconfig of the target cluster (file://… or env://…)")],
        model: Annotated[
            str, Doc("Model reference, e.g. models:/card-fraud@challenger")
        ] = "models:/card-fraud@challenger",
        env: Annotated[str, Doc("Environment overlay: staging or production")] = "staging",
        namespace: Annotated[str, Doc("Kubernetes namespace")] = "mlship",
        approve: Annotated[bool, Doc("Required for production: a human approved this release")] = False,
        image: Annotated[str, Doc("Serving image reference with digest (from publish)")] = "",
    ) -> str:
        """Blue-green deploy to Kubernetes (`mlship deploy --target kubernetes`); rolls back on failure."""
        return await self._deploy(kubeconfig, model, env, namespace, approve, image).stdout()

    @_function_with_cache("never")
    async def rollback(
        self,
        kubeconfig: Annotated[dagger.Secret, Doc("kubeconfig of the target cluster")],
        env: Annotated[str, Doc("Environment overlay: staging or production")] = "staging",
        namespace: Annotated[str, Doc("Kubernetes namespace")] = "mlship",
    ) -> str:
        """Switch live back to the previous color (one switch, no cold start)."""
        return await self._rollback(kubeconfig, env, namespace).stdout()

    @function
    def serve(
        self,
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
    ) -> dagger.Service:
        """The model behind the mlship HTTP API on port 8000 (`serve up --ports 8000:8000`)."""
        return self._serve(self._model(model))

    @_function_with_cache("never")
    def monitor(
        self,
        reference: Annotated[dagger.File, Doc("Reference data (what the model was trained on)")],
        current: Annotated[dagger.File, Doc("Recent production data")],
    ) -> dagger.Directory:
        """Drift check: the drift report directory (drift.json says whether drift was found)."""
        return self._monitor(reference, current).directory(f"{OUT}/drift")

    @function
    def batch_predict(
        self,
        input: Annotated[dagger.File, Doc("CSV or Parquet rows to score")],
        model: Annotated[dagger.Directory | None, Doc("MLflow model directory (default: train one now)")] = None,
    ) -> dagger.File:
        """Score a file offline: predictions as Parquet."""
        return self._batch_predict(self._model(model), input, "input.parquet").file(f"{OUT}/predictions.parquet")

    @_function_with_cache("never")
    async def all(
        self,
        data: Annotated[dagger.File | None, Doc("Dataset (default: synthetic, seed 42)")] = None,
        tracking_uri: Annotated[str, Doc("MLflow tracking URI (default: embedded)")] = "",
        tracking_token: Annotated[dagger.Secret | None, Doc("MLflow token")] = None,
        severity: Annotated[str, Doc("Scan gate threshold")] = "HIGH",
        git_sha: Annotated[str, Doc("Commit being released")] = "unknown",
        address: Annotated[str, Doc("Publish the image here (needs username and password)")] = "",
        username: Annotated[str, Doc("Registry user")] = "",
        password: Annotated[dagger.Secret | None, Doc("Registry password or token")] = None,
        kubeconfig: Annotated[dagger.Secret | None, Doc("Deploy to staging when given")] = None,
        namespace: Annotated[str, Doc("Kubernetes namespace")] = "mlship",
    ) -> str:
        """lint ∥ test ∥ validate-data → train → gate → build → scan, then publish/deploy if credentialed."""
        return await self._all(
            data, tracking_uri, tracking_token, severity, git_sha, address, username, password, kubeconfig, namespace
        )

    async def _all(
        self,
        data: dagger.File | None,
        tracking_uri: str,
        tracking_token: dagger.Secret | None,
        severity: str,
        git_sha: str,
        address: str,
        username: str,
        password: dagger.Secret | None,
        kubeconfig: dagger.Secret | None,
        namespace: str,
    ) -> str:
        summary: list[str] = []

        async def stage(name: str, obj: dagger.Container | dagger.Directory) -> None:
            await _settle(obj)
            summary.append(f"{name}: ok")

        async with anyio.create_task_group() as tg:
            tg.start_soon(stage, "lint", self._lint())
            tg.start_soon(stage, "test", self._test())
            tg.start_soon(stage, "validate-data", self._validate(data))
        summary.sort()
        model_dir = self._train_dir(data, tracking_uri, tracking_token)
        await stage("train", model_dir)
        model = model_dir.directory("model")
        await stage("gate", self._gate(model, data, tracking_uri, tracking_token, no_champion=not tracking_uri))
        image = self._build(
            model, git_sha, DEFAULT_MODEL_NAME, "0", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        await stage("build", image)
        await stage("scan", self._scan_gate(self._trivy(image, "json").file("/scan/report.json"), severity, False))
        ref = ""
        if address and username and password is not None:
            ref = await _publish(image.with_registry_auth(address, username, password), address)
            summary.append(f"publish: {ref}")
        else:
            summary.append("publish: skipped (no registry credentials)")
        if kubeconfig is not None:
            await stage(
                "deploy staging",
                self._deploy(kubeconfig, "models:/card-fraud@challenger", "staging", namespace, False, ref),
            )
        else:
            summary.append("deploy: skipped (no kubeconfig)")
        return "\n".join(summary)


async def _settle(obj: dagger.Container | dagger.Directory) -> None:
    """Force a lazy stage to run (and fail the pipeline if it fails)."""
    if isinstance(obj, dagger.Container):
        await obj.sync()
    else:
        await obj.entries()


async def _publish(image: dagger.Container, address: str) -> str:
    return await image.publish(address)
