"""The pipeline's stages as lazy Dagger objects: lint, test, validate, train, gate, build, scan,
serve, drift and batch scoring.

`Stages` holds the container chains `MlPipeline`'s functions hand back or await; each runs one
`mlship …` command, so a failing stage is debugged with the same command on the host.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import dagger
from dagger import dag

from . import images
from .constants import (
    BATCH_OUT,
    BUILD_PATHS,
    DATA_DIR,
    DATA_PATHS,
    EXIT_CODE,
    JRE_PACKAGE,
    LINT_PATHS,
    OUT,
    PACKAGE_PATHS,
    README_STAND_IN,
    REPORTS,
    SCAN_GATE_PATHS,
    SRC,
    SYNTHETIC,
    TEST_EXTRAS,
    TEST_PATHS,
    TEST_REQUIRED_TIERS,
    TEST_SELECTION,
    TRIVY_DB_CACHE,
    UV_CACHE,
    VENV,
    BadRows,
    ReportFormat,
    Severity,
    UsageError,
)


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


class Stages:
    """The undecorated stage helpers `MlPipeline` inherits: lazy objects only, no awaits (walked by ci/tests).

    Each returns a lazy Dagger object that runs exactly the `mlship …` command a developer runs
    on the host. They are methods, not `@function`s, so they are no part of the CLI."""

    source: dagger.Directory
    python_image: str

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
            .with_mounted_cache("/root/.cache/uv", dag.cache_volume(UV_CACHE))
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
            ctr = fresh(ctr.with_env_variable("MLFLOW_TRACKING_URI", tracking_uri), "tracking server state")
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
                dag.cache_volume(TRIVY_DB_CACHE),
                sharing=dagger.CacheSharingMode.LOCKED,
            )
            .with_env_variable("TRIVY_NO_PROGRESS", "true")
            .with_file("/scan/image.tar", image.as_tarball())
        )
        return fresh(ctr, "vulnerability database", daily=True).with_exec(
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
            ctr = fresh(ctr, "batch input")
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


def fresh(ctr: dagger.Container, why: str, *, daily: bool = False) -> dagger.Container:
    """Bust the layer cache on purpose: the next exec depends on state outside the inputs (`why`).

    `daily`: reuse the result for the rest of the UTC day (Trivy's database is rebuilt a few times
    a day), so re-running an unchanged image the same day does not re-scan it."""
    name = "MLSHIP_FRESH_" + re.sub(r"\W+", "_", why).upper()
    now = dt.datetime.now(dt.UTC)
    return ctr.with_env_variable(name, now.date().isoformat() if daily else now.isoformat())


def with_exit_code(reports: dagger.Directory, code: int) -> dagger.Directory:
    """The report directory with an `exit-code` file: a stage's verdict travels with its report."""
    return reports.with_new_file(EXIT_CODE, f"{code}\n")


def batch_rows(file: dagger.File | None, uri: str) -> dagger.File | str:
    """Exactly one of a file handed in and a URI read where it lives."""
    if (file is None) == (not uri):
        raise UsageError("pass --input (a file) or --input-uri (s3://bucket/prefix/ or a glob), exactly one")
    return file if file is not None else uri
