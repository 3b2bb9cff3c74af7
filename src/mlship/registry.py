"""MLflow tracking and model registry: the ONLY module in mlship that imports mlflow.

Embedded default: a sqlite file and an artifact folder under `.mlship/`; `MLFLOW_TRACKING_URI`
(or `tracking_uri` in the settings) points at any server instead. Models are promoted with
aliases (`challenger`, `champion`), never with the deprecated stages, and every alias is
resolved once to an immutable version before anything is deployed or compared.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.errors import ConfigError, InfraError, MlshipError

if TYPE_CHECKING:
    import pandas as pd

    from mlship.settings import Settings

MODEL_ARTIFACT = "model"
ALIASES = ("challenger", "champion")
GATE_TAG = "mlship.gate"
"""The gate's verdict (`pass`/`fail`), set on the candidate's run by the gate and copied to its version."""
GATE_WARNING_TAG = "mlship.gate_warning"
"""The gate passed with ⚠ not enough evidence on these gates (and what would settle each); empty otherwise."""
GATE_REPORT_TAG = "mlship.gate_report"
"""Where that gate's report is: the local gate.md, and the run artifact `gate/gate.md`."""
FORCED_TAG = "mlship.gate_override"
"""`--force --reason TEXT` on register/promote: the reason, recorded on the version."""
RECORD_TAGS = (GATE_TAG, GATE_WARNING_TAG, GATE_REPORT_TAG, FORCED_TAG, "mlship.model_sha256")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_RUNS_URI = re.compile(r"^runs:/(?P<run>[0-9a-zA-Z]+)/(?P<path>.+)$")
_LOGGED_URI = re.compile(r"^models:/(?P<id>m-[0-9a-zA-Z]+)$")


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


class ModelNotFound(ConfigError):
    """A model reference that names nothing (unknown alias, version, run or path): exit 2."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference pinned to something immutable: what gets compared, served, deployed."""

    ref: str
    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """Human name: `card-fraud v3`, or the URI for unregistered models."""
        return f"{self.name} v{self.version}" if self.name and self.version else self.uri


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, for `mlship models` and the deploy history."""

    name: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    created_ms: int
    metrics: dict[str, float] = field(default_factory=dict)
    gate: str = "never ran"
    """The gate's verdict recorded for this version (`pass`, `fail`, `never ran`), `+ forced` when overridden."""
    gate_report: str | None = None


@dataclass(frozen=True)
class LoggedRun:
    """What training produced in MLflow."""

    run_id: str
    model_uri: str
    experiment_id: str


def _quiet() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    for category in (DeprecationWarning, FutureWarning, UserWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"mlflow(\.|$)")
        warnings.filterwarnings("ignore", category=category, module=r"sqlalchemy(\.|$)")
        warnings.filterwarnings("ignore", category=category, module=r"alembic(\.|$)")
    warnings.filterwarnings("ignore", message=r".*noload.*")
    warnings.filterwarnings("ignore", message=r".*Pandas4Warning.*")
    import logging

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _infra(action: str) -> Iterator[None]:
    """Turn MLflow's connection failures into one-line exit-3 errors."""
    try:
        yield
    except MlshipError:
        raise
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if _looks_like_connection_error(exc):
            raise InfraError(
                f"MLflow is unreachable while trying to {action}: {text}",
                hint="check MLFLOW_TRACKING_URI and that the server is up",
            ) from exc
        raise


def _looks_like_connection_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    text = " ".join(str(e) for e in _chain(exc)).lower()
    return bool(
        names
        & {
            "ConnectionError",
            "MaxRetryError",
            "NewConnectionError",
            "ConnectTimeout",
            "ReadTimeout",
            "ConnectionRefusedError",
            "OperationalError",
        }
    ) or ("max retries exceeded" in text or "connection refused" in text or "unable to open database" in text)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


class Registry:
    """A connection to one MLflow tracking server / registry and one experiment."""

    def __init__(self, tracking_uri: str, *, experiment: str = "mlship", artifact_root: Path | None = None) -> None:
        _quiet()
        import mlflow

        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.artifact_root = artifact_root
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        elif tracking_uri.startswith(("http://", "https://")):
            _check_server(tracking_uri)
        # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; undo that, or the next
        # Settings in this process would mistake our own choice for the user's override.
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        uri = settings.resolved_tracking_uri
        root = settings.artifact_root if uri.startswith("sqlite:") else None
        return cls(uri, experiment=settings.experiment, artifact_root=root)

    # Experiments and runs -------------------------------------------------------------------

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            with _infra("open the experiment"):
                exp = self._client.get_experiment_by_name(self.experiment_name)
                if exp is None:
                    location = self.artifact_root.as_uri() if self.artifact_root else None
                    self._experiment_id = self._client.create_experiment(
                        self.experiment_name, artifact_location=location
                    )
                else:
                    self._experiment_id = exp.experiment_id
        return self._experiment_id

    def log_model_run(
        self,
        model: Any,
        *,
        input_example: pd.DataFrame,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        artifacts: Path | None = None,
        pip_requirements: list[str] | None = None,
        run_name: str | None = None,
    ) -> LoggedRun:
        """Log one training run: params, metrics, tags, the model (with signature) and artifacts.

        Serialization is cloudpickle: MLflow 3's default (skops) refuses tree-based
        estimators such as gradient boosting, and a model that cannot be loaded back is
        worse than a warning about pickle.
        """
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        with _infra("log the training run"):
            signature = infer_signature(input_example, model.predict(input_example))
            with mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name) as run:
                mlflow.log_params({k: _param(v) for k, v in params.items()})
                mlflow.log_metrics(dict(metrics))
                mlflow.set_tags(dict(tags))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    info = mlflow.sklearn.log_model(
                        model,
                        name=MODEL_ARTIFACT,
                        signature=signature,
                        input_example=input_example,
                        pip_requirements=pip_requirements or default_requirements(),
                        serialization_format="cloudpickle",
                    )
                if artifacts is not None and artifacts.is_dir():
                    mlflow.log_artifacts(str(artifacts), artifact_path="reports")
                self._record_digest(run.info.run_id, info.model_id, info.model_uri)
            return LoggedRun(run_id=run.info.run_id, model_uri=info.model_uri, experiment_id=run.info.experiment_id)

    def _record_digest(self, run_id: str, model_id: str, model_uri: str) -> str:
        """sha256 of the logged model's files: a file in the model directory, a run and a logged-model tag."""
        import tempfile

        import mlflow.artifacts

        from mlship import integrity

        with tempfile.TemporaryDirectory(prefix="mlship-digest-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
            digest = integrity.write_sidecar(local)
            self._client.log_model_artifact(model_id, str(local / integrity.SIDECAR))
        self._client.set_tag(run_id, integrity.TAG, digest)
        self._client.set_logged_model_tags(model_id, {integrity.TAG: digest})
        return digest

    def log_to_run(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        artifacts: Path | None = None,
        artifact_path: str = "reports",
    ) -> None:
        """Append metrics, tags and a folder of artifacts to an existing run (e.g. the gate's)."""
        with _infra("log to the run"):
            for key, value in (metrics or {}).items():
                self._client.log_metric(run_id, key, float(value))
            for tag, text in (tags or {}).items():
                self._client.set_tag(run_id, tag, text)
            if artifacts is not None and artifacts.is_dir():
                self._client.log_artifacts(run_id, str(artifacts), artifact_path=artifact_path)
                if GATE_TAG in (tags or {}):  # a verdict logged with its report: remember where to read it
                    where = f"{(artifacts / 'gate.md').resolve()} (runs:/{run_id}/{artifact_path}/gate.md)"
                    self._client.set_tag(run_id, GATE_REPORT_TAG, where)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        with _infra("read the run"):
            try:
                return dict(self._client.get_run(run_id).data.metrics)
            except Exception as exc:
                if _looks_like_connection_error(exc):
                    raise
                raise ModelNotFound(
                    f"run {run_id} does not exist in {self.tracking_uri}", hint="use a run id printed by `mlship train`"
                ) from None

    # Registry -------------------------------------------------------------------------------

    def register(
        self, model_ref: str, name: str, *, alias: str | None = None, tags: Mapping[str, str] | None = None
    ) -> ResolvedModel:
        """Register a run's model (or any model URI) under `name`; optionally point `alias` at it."""
        import mlflow

        uri = _run_model_uri(model_ref)
        with _infra("register the model"):
            recorded: dict[str, str] = {}
            if uri.startswith("runs:/"):
                self.run_metrics(uri.split("/")[1])  # a clear error for an unknown run id
                recorded = self.run_record(uri.split("/")[1])
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                # the run's gate verdict, report and model digest travel with the version
                mv = mlflow.register_model(uri, name, tags={**recorded, **(tags or {})})
            if alias:
                self.set_alias(name, alias, str(mv.version))
            return self.resolve(f"models:/{name}/{mv.version}")

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `alias` at `version` (atomic in MLflow: promotion and rollback are one call)."""
        with _infra("set the alias"):
            self._version(name, version)
            self._client.set_registered_model_alias(name, alias, version)

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version an alias points at now, or None when the alias (or model) does not exist."""
        with _infra("read the alias"):
            try:
                return str(self._client.get_model_version_by_alias(name, alias).version)
            except Exception as exc:
                if _looks_like_connection_error(exc):
                    raise
                return None

    def resolve(self, ref: str) -> ResolvedModel:
        """Pin a model reference to an immutable URI (an alias becomes the version it names now)."""
        with _infra("resolve the model reference"):
            m = _MODELS_URI.match(ref)
            if m and not _LOGGED_URI.match(ref):
                name = m["name"]
                if m["alias"]:
                    version = self.alias_version(name, m["alias"])
                    if version is None:
                        raise ModelNotFound(
                            f"{ref}: model {name!r} has no alias {m['alias']!r}",
                            hint="see `mlship models` for versions and aliases",
                        )
                else:
                    version = m["version"]
                mv = self._version(name, version)
                return ResolvedModel(
                    ref=ref,
                    uri=f"models:/{name}/{version}",
                    name=name,
                    version=version,
                    run_id=mv.run_id,
                    aliases=tuple(sorted(mv.aliases)),
                )
            if _LOGGED_URI.match(ref):
                return ResolvedModel(ref=ref, uri=ref)
            r = _RUNS_URI.match(ref)
            if r:
                self.run_metrics(r["run"])
                return ResolvedModel(ref=ref, uri=ref, run_id=r["run"])
            path = Path(ref)
            if (path / "MLmodel").is_file():
                return ResolvedModel(ref=ref, uri=str(path.resolve()))
            raise ModelNotFound(
                f"{ref!r} is not a model reference",
                hint="use models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model or a model directory",
            )

    def _version(self, name: str, version: str) -> Any:
        try:
            return self._client.get_model_version(name, version)
        except Exception as exc:
            if _looks_like_connection_error(exc):
                raise
            raise ModelNotFound(
                f"model {name!r} has no version {version}", hint="see `mlship models` for what is registered"
            ) from None

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of `name`, newest first, with aliases and the key metrics of its run."""
        with _infra("list model versions"):
            try:
                found = self._client.search_model_versions(f"name='{name}'")
            except Exception as exc:
                if _looks_like_connection_error(exc):
                    raise
                return []
            out: list[VersionInfo] = []
            for mv in sorted(found, key=lambda v: int(v.version), reverse=True):
                full = self._client.get_model_version(name, mv.version)  # search omits aliases
                metrics = self.run_metrics(mv.run_id) if mv.run_id else {}
                record = self.version_record(name, str(mv.version))
                out.append(
                    VersionInfo(
                        name=name,
                        version=str(mv.version),
                        run_id=mv.run_id,
                        aliases=tuple(sorted(full.aliases)),
                        created_ms=int(mv.creation_timestamp or 0),
                        metrics=metrics,
                        gate=gate_label(record),
                        gate_report=record.get(GATE_REPORT_TAG),
                    )
                )
            return out

    # Models ---------------------------------------------------------------------------------

    def load_model(self, model: ResolvedModel | str) -> Any:
        """Load the native scikit-learn estimator (with predict_proba) behind a reference.

        Downloaded and verified against the recorded sha256 first (see `download`).
        """
        import tempfile

        resolved = model if isinstance(model, ResolvedModel) else self.resolve(model)
        with tempfile.TemporaryDirectory(prefix="mlship-load-") as tmp:
            directory = self.download(resolved, Path(tmp))
            with _infra("load the model"):
                return load_model_dir(directory)

    def download(self, model: ResolvedModel | str, dest: Path) -> Path:
        """Copy the MLflow model directory behind a reference to `dest` (for images, serving).

        The copy is checked against the sha256 the tracking store recorded when the model was
        logged (exit 2 on a mismatch), so what is unpickled later is what was logged.
        """
        import mlflow.artifacts

        from mlship import integrity

        resolved = model if isinstance(model, ResolvedModel) else self.resolve(model)
        if Path(resolved.uri).is_dir():
            integrity.verify(Path(resolved.uri), what=resolved.label)
            return Path(resolved.uri)
        dest.mkdir(parents=True, exist_ok=True)
        with _infra("download the model"):
            directory = Path(mlflow.artifacts.download_artifacts(artifact_uri=resolved.uri, dst_path=str(dest)))
            integrity.verify(directory, self.recorded_digest(resolved), what=resolved.label)
            return directory

    # What the tracking store remembers about a model ---------------------------------------

    def run_record(self, run_id: str) -> dict[str, str]:
        """The run's gate verdict, report location, override and model digest tags (those present)."""
        with _infra("read the run"):
            try:
                tags = dict(self._client.get_run(run_id).data.tags)
            except Exception as exc:
                if _looks_like_connection_error(exc):
                    raise
                return {}
        return {k: v for k, v in tags.items() if k in RECORD_TAGS}

    def version_record(self, name: str, version: str) -> dict[str, str]:
        """The version's own record, completed from its run's (for versions registered elsewhere)."""
        with _infra("read the version"):
            mv = self._version(name, version)
            own = {k: v for k, v in dict(mv.tags or {}).items() if k in RECORD_TAGS}
            from_run = self.run_record(mv.run_id) if mv.run_id else {}
        return {**from_run, **own}

    def recorded_digest(self, resolved: ResolvedModel) -> str | None:
        """The sha256 recorded for this model in the tracking store, if any."""
        from mlship import integrity

        if resolved.name and resolved.version:
            return self.version_record(resolved.name, resolved.version).get(integrity.TAG)
        if resolved.run_id:
            return self.run_record(resolved.run_id).get(integrity.TAG)
        logged = _LOGGED_URI.match(resolved.uri)
        if logged:
            with _infra("read the logged model"):
                try:
                    tags = dict(self._client.get_logged_model(logged["id"]).tags or {})
                except Exception as exc:
                    if _looks_like_connection_error(exc):
                        raise
                    return None
            return tags.get(integrity.TAG)
        return None

    def record_passed(self, record: PassedRecord) -> None:
        """Record on the version that `record.environment` verified it live in `record.image`."""
        previous = self.passed_record(record.name, record.version, record.environment)
        images = [record.image] + [i for i in (previous.images if previous else ()) if i != record.image]
        fields = {
            "environment": record.environment,
            "image": record.image,
            "at": record.at,
            "git_sha": record.git_sha,
            "ci_job": record.ci_job,
            "namespace": record.namespace,
            "images": " ".join(images[:PASSED_IMAGES_KEPT]),
        }
        env = record.environment
        self.set_version_tags(
            record.name, record.version, {PASSED_TAG.format(env=env, field=k): v for k, v in fields.items()}
        )

    def passed_record(self, name: str, version: str, env: str) -> PassedRecord | None:
        """What the version's tags say about `env` (None: it never passed there)."""
        with _infra("read the version"):
            tags = dict(self._version(name, version).tags or {})
        return _passed_from_tags(name, version, env, tags)

    def latest_passed(self, name: str, env: str) -> PassedRecord | None:
        """The version that `env` verified most recently, with the image it ran in (None: none has)."""
        with _infra("list model versions"):
            try:
                found = self._client.search_model_versions(f"name='{name}'")
            except Exception as exc:
                if _looks_like_connection_error(exc):
                    raise
                return None
        records = [_passed_from_tags(name, str(mv.version), env, dict(mv.tags or {})) for mv in found]
        passed = [r for r in records if r is not None]
        return max(passed, key=lambda r: (r.at, int(r.version))) if passed else None

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        with _infra("tag the version"):
            self._version(name, version)
            for key, value in tags.items():
                self._client.set_model_version_tag(name, version, key, value)


def _passed_from_tags(name: str, version: str, env: str, tags: Mapping[str, str]) -> PassedRecord | None:
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


def load_model_dir(path: Path, expected_sha256: str | None = None) -> Any:
    """Load a native scikit-learn model from an MLflow model directory (no tracking server).

    Every model mlship loads comes through here: the files are checked against the recorded
    sha256 (the directory's own record, and `expected_sha256` when the caller has the tracking
    store's) before pickle runs any of their code.
    """
    _quiet()
    import mlflow.sklearn

    from mlship import integrity

    integrity.verify(Path(path), expected_sha256)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mlflow.sklearn.load_model(str(path))


def model_input_schema(model_dir: Path) -> list[tuple[str, str]]:
    """(column, MLflow type) pairs of a model's input signature, in order."""
    _quiet()
    from mlflow.models import Model

    meta = Model.load(str(model_dir))
    if meta.signature is None:
        return []
    return [(str(spec.name), getattr(spec.type, "name", str(spec.type))) for spec in meta.signature.inputs.inputs]


def model_input_example(model_dir: Path) -> pd.DataFrame | None:
    """The input example logged with the model (golden rows for smoke tests), if any."""
    _quiet()
    import pandas as pd
    from mlflow.models import Model

    meta = Model.load(str(model_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = meta.load_input_example(str(model_dir))
    return example if isinstance(example, pd.DataFrame) else None


def gate_label(record: Mapping[str, str]) -> str:
    """`pass`, `pass ⚠` (not enough evidence on some gate), `fail` or `never ran`, with `+ forced`
    when someone overrode the gate (and said why)."""
    verdict = record.get(GATE_TAG) or "never ran"
    if verdict == "pass" and record.get(GATE_WARNING_TAG):
        verdict = "pass ⚠"
    return f"{verdict} + forced" if record.get(FORCED_TAG) else verdict


def default_requirements() -> list[str]:
    """Exact pins for what a logged model needs to load: faster and truer than inference."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "cloudpickle", "pandas", "numpy", "scipy")]


def _run_model_uri(ref: str) -> str:
    if ref.startswith(("runs:/", "models:/")) or "/" in ref or Path(ref).exists():
        return ref
    return f"runs:/{ref}/{MODEL_ARTIFACT}"


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def _check_server(uri: str) -> None:
    """Fail fast (exit 3) when a tracking server does not answer, instead of MLflow's long retries."""
    import httpx

    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=5.0)
    except httpx.HTTPError as exc:
        raise InfraError(
            f"MLflow tracking server {uri} is unreachable: {exc}", hint="start it or fix MLFLOW_TRACKING_URI"
        ) from None


def model_dir_info(model_dir: Path) -> dict[str, str | None]:
    """Registered name, version and run id recorded inside a model directory (None when absent).

    MLflow writes `registered_model_meta` when a registered version is downloaded, so a
    directory baked into an image still knows which version it is.
    """
    _quiet()
    from mlflow.models import Model
    from mlflow.utils.yaml_utils import read_yaml

    meta = Model.load(str(model_dir))
    info: dict[str, str | None] = {"name": None, "version": None, "run_id": meta.run_id}
    registered = Path(model_dir) / "registered_model_meta"
    if registered.is_file():
        loaded = read_yaml(str(model_dir), "registered_model_meta") or {}  # type: ignore[no-untyped-call]
        if isinstance(loaded, dict):
            for key, field_name in (("name", "model_name"), ("version", "model_version")):
                value = loaded.get(field_name)
                info[key] = str(value) if value not in (None, "") else None
    return info


def spark_proba_udf(spark: Any, model_dir: Path, work_dir: Path) -> Any:
    """MLflow's Spark UDF over a model's positive-class probability (a column of [p0, p1] arrays).

    mlship logs scikit-learn models whose pyfunc `predict` gives labels; the UDF is built on a
    copy of the (already verified) model directory whose pyfunc flavor calls `predict_proba`
    instead, the flavor option MLflow itself writes for `pyfunc_predict_fn`.
    """
    _quiet()
    import shutil

    import mlflow.pyfunc
    import yaml
    from pyspark.sql.types import ArrayType, DoubleType

    view = work_dir / "proba-model"
    shutil.copytree(model_dir, view)
    meta = yaml.safe_load((view / "MLmodel").read_text())
    pyfunc = meta.get("flavors", {}).get("python_function")
    if not isinstance(pyfunc, dict):
        raise ConfigError(f"{model_dir} has no python_function flavor", hint="score an MLflow model logged by mlship")
    pyfunc["predict_fn"] = "predict_proba"
    (view / "MLmodel").write_text(yaml.safe_dump(meta, sort_keys=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mlflow.pyfunc.spark_udf(spark, str(view), result_type=ArrayType(DoubleType()), env_manager="local")
