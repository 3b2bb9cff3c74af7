"""The pipeline as Dagger functions: `MlPipeline`, whose `@function`s are the `dagger call` CLI.

Their signatures, `Doc`s and defaults are the CLI; their bodies are thin. The undecorated helpers
they call (`_lint`, `_train`, … in stages.py; `_deploy`, `_all`, … in release.py) return lazy
Dagger objects that run exactly the `mlship …` command a developer runs on the host, so a failing
stage is debugged with the same command outside the engine. constants.py names the paths, enums
and errors; awaits.py holds the few awaits on the engine. The helpers are what the engine-free
tests walk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

import dagger
from dagger import DefaultPath, Doc, Ignore, check, dag, function, object_type

from . import awaits, images
from .constants import (
    BATCH_OUT,
    DEFAULT_MODEL_NAME,
    OUT,
    REPORTS,
    SOURCE_IGNORE,
    TEST_SELECTION,
    BadRows,
    Environment,
    PipelineFailed,
    ReportFormat,
    Severity,
    UsageError,
)
from .release import Release, ReleaseStages, require_image_digest, tail
from .stages import BatchJob, batch_rows, with_exit_code

F = TypeVar("F", bound=Callable[..., Any])


def _function_with_cache(policy: str) -> Callable[[F], F]:
    """`@function(cache=…)`: the 0.21 typing overloads omit `cache`, the runtime accepts it."""
    return cast(Callable[[F], F], function(cache=policy))  # type: ignore[call-overload]


@object_type
class MlPipeline(ReleaseStages):
    """The mlship pipeline: lint ∥ test ∥ validate-data → train → gate → build → scan → publish → deploy."""

    source: Annotated[
        dagger.Directory,
        DefaultPath("/"),
        Ignore(SOURCE_IGNORE),
        Doc("Project source (the repository root; .git, virtualenvs, caches and .mlship are left out)"),
    ]
    python_image: Annotated[str, Doc("Python base image, pinned by digest")] = images.PYTHON

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
        code = await awaits.exit_code(run)
        if code != 0:
            raise PipelineFailed(f"pytest exited {code}:\n{tail(await awaits.stdout(run))}")
        return await awaits.stdout(run)

    @function
    async def test_report(
        self,
        selection: Annotated[
            str, Doc("pytest -m expression: which test tiers run (the coverage floor gates only the default)")
        ] = TEST_SELECTION,
    ) -> dagger.Directory:
        """junit.xml, coverage.xml and exit-code of the test run — also when tests fail, so CI can export them."""
        run = self._test(selection)
        return with_exit_code(run.directory(REPORTS), await awaits.exit_code(run))

    @function
    @check
    async def validate_data(
        self,
        data: Annotated[
            dagger.File | None, Doc("CSV or Parquet dataset, read by its extension (default: synthetic, seed 42)")
        ] = None,
    ) -> str:
        """Validate the dataset against data/expectations (fails when invalid)."""
        return await self._validate(await awaits.named(data)).stdout()

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
        return self._train_dir(await awaits.named(data), tracking_uri, tracking_token)

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
        run = self._gate(self._model(model), await awaits.named(data), tracking_uri, tracking_token, no_champion)
        return with_exit_code(run.directory(f"{OUT}/gate"), await awaits.exit_code(run))

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
        return with_exit_code(
            out.with_file("scan-gate.md", run.file(f"{REPORTS}/scan-gate.md")), await awaits.exit_code(run)
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
        return await awaits.publish(image.with_registry_auth(address, username, password), address)

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
        require_image_digest(image)
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
        run = self._monitor(await awaits.named_file(reference), await awaits.named_file(current))
        return with_exit_code(run.directory(f"{OUT}/drift"), await awaits.exit_code(run))

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
        rows = batch_rows(input, input_uri)
        if model_uri and model is not None:
            raise UsageError("pass --model (a directory) or --model-uri (a registered model), not both")
        if model_uri and not tracking_uri:
            raise UsageError("--model-uri is resolved by a tracking server: pass --tracking-uri too")
        run = self._batch_predict(
            model_uri or self._model(model), rows if isinstance(rows, str) else await awaits.named_file(rows), job
        )
        return with_exit_code(run.directory(BATCH_OUT), await awaits.exit_code(run))

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
        release.data = await awaits.named(data)
        return await self._all(release)
