"""The Registry: one MLflow tracking store and model registry, and one experiment.

Models are promoted with aliases (`challenger`, `champion`), never with the deprecated stages,
and every alias is resolved once to an immutable version before anything is deployed or compared.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship import integrity
from mlship.errors import ConfigError
from mlship.model.gates.verdict import GATE_REPORT_TAG, RECORD_TAGS, gate_label
from mlship.registry.connection import check_server, infra, looks_like_connection_error, quiet
from mlship.registry.model_dir import default_requirements, load_model_dir
from mlship.registry.passed import PASSED_IMAGES_KEPT, PASSED_TAG, PassedRecord, passed_from_tags

if TYPE_CHECKING:
    import pandas as pd

    from mlship.settings import Settings

MODEL_ARTIFACT = "model"
ALIASES = ("challenger", "champion")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_RUNS_URI = re.compile(r"^runs:/(?P<run>[0-9a-zA-Z]+)/(?P<path>.+)$")
_LOGGED_URI = re.compile(r"^models:/(?P<id>m-[0-9a-zA-Z]+)$")


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


class Registry:
    """A connection to one MLflow tracking server / registry and one experiment."""

    def __init__(self, tracking_uri: str, *, experiment: str = "mlship", artifact_root: Path | None = None) -> None:
        quiet()
        import mlflow  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)

        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.artifact_root = artifact_root
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        elif tracking_uri.startswith(("http://", "https://")):
            check_server(tracking_uri)
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
            with infra("open the experiment"):
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
        import mlflow  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)
        import mlflow.sklearn  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)
        from mlflow.models import infer_signature  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)

        with infra("log the training run"):
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
        import mlflow.artifacts  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)

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
        with infra("log to the run"):
            for key, value in (metrics or {}).items():
                self._client.log_metric(run_id, key, float(value))
            for tag, text in (tags or {}).items():
                self._client.set_tag(run_id, tag, text)
            if artifacts is not None and artifacts.is_dir():
                self._client.log_artifacts(run_id, str(artifacts), artifact_path=artifact_path)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        with infra("read the run"):
            try:
                return dict(self._client.get_run(run_id).data.metrics)
            except Exception as exc:
                if looks_like_connection_error(exc):
                    raise
                raise ModelNotFound(
                    f"run {run_id} does not exist in {self.tracking_uri}", hint="use a run id printed by `mlship train`"
                ) from None

    # Registry -------------------------------------------------------------------------------

    def register(
        self, model_ref: str, name: str, *, alias: str | None = None, tags: Mapping[str, str] | None = None
    ) -> ResolvedModel:
        """Register a run's model (or any model URI) under `name`; optionally point `alias` at it."""
        import mlflow  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)

        uri = _run_model_uri(model_ref)
        with infra("register the model"):
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
        with infra("set the alias"):
            self._version(name, version)
            self._client.set_registered_model_alias(name, alias, version)

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version an alias points at now, or None when the alias (or model) does not exist."""
        with infra("read the alias"):
            try:
                return str(self._client.get_model_version_by_alias(name, alias).version)
            except Exception as exc:
                if looks_like_connection_error(exc):
                    raise
                return None

    def resolve(self, ref: str) -> ResolvedModel:
        """Pin a model reference to an immutable URI (an alias becomes the version it names now)."""
        with infra("resolve the model reference"):
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
            if looks_like_connection_error(exc):
                raise
            raise ModelNotFound(
                f"model {name!r} has no version {version}", hint="see `mlship models` for what is registered"
            ) from None

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of `name`, newest first, with aliases and the key metrics of its run."""
        with infra("list model versions"):
            try:
                found = self._client.search_model_versions(f"name='{name}'")
            except Exception as exc:
                if looks_like_connection_error(exc):
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
        resolved = model if isinstance(model, ResolvedModel) else self.resolve(model)
        with tempfile.TemporaryDirectory(prefix="mlship-load-") as tmp:
            directory = self.download(resolved, Path(tmp))
            with infra("load the model"):
                return load_model_dir(directory)

    def download(self, model: ResolvedModel | str, dest: Path) -> Path:
        """Copy the MLflow model directory behind a reference to `dest` (for images, serving).

        The copy is checked against the sha256 the tracking store recorded when the model was
        logged (exit 2 on a mismatch), so what is unpickled later is what was logged.
        """
        import mlflow.artifacts  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)

        resolved = model if isinstance(model, ResolvedModel) else self.resolve(model)
        if Path(resolved.uri).is_dir():
            integrity.verify(Path(resolved.uri), what=resolved.label)
            return Path(resolved.uri)
        dest.mkdir(parents=True, exist_ok=True)
        with infra("download the model"):
            directory = Path(mlflow.artifacts.download_artifacts(artifact_uri=resolved.uri, dst_path=str(dest)))
            integrity.verify(directory, self.recorded_digest(resolved), what=resolved.label)
            return directory

    # What the tracking store remembers about a model ---------------------------------------

    def run_record(self, run_id: str) -> dict[str, str]:
        """The run's gate verdict, report location, override and model digest tags (those present)."""
        with infra("read the run"):
            try:
                tags = dict(self._client.get_run(run_id).data.tags)
            except Exception as exc:
                if looks_like_connection_error(exc):
                    raise
                return {}
        return {k: v for k, v in tags.items() if k in RECORD_TAGS}

    def version_record(self, name: str, version: str) -> dict[str, str]:
        """The version's own record, completed from its run's (for versions registered elsewhere)."""
        with infra("read the version"):
            mv = self._version(name, version)
            own = {k: v for k, v in dict(mv.tags or {}).items() if k in RECORD_TAGS}
            from_run = self.run_record(mv.run_id) if mv.run_id else {}
        return {**from_run, **own}

    def recorded_digest(self, resolved: ResolvedModel) -> str | None:
        """The sha256 recorded for this model in the tracking store, if any."""
        if resolved.name and resolved.version:
            return self.version_record(resolved.name, resolved.version).get(integrity.TAG)
        if resolved.run_id:
            return self.run_record(resolved.run_id).get(integrity.TAG)
        logged = _LOGGED_URI.match(resolved.uri)
        if logged:
            with infra("read the logged model"):
                try:
                    tags = dict(self._client.get_logged_model(logged["id"]).tags or {})
                except Exception as exc:
                    if looks_like_connection_error(exc):
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
        with infra("read the version"):
            tags = dict(self._version(name, version).tags or {})
        return passed_from_tags(name, version, env, tags)

    def latest_passed(self, name: str, env: str) -> PassedRecord | None:
        """The version that `env` verified most recently, with the image it ran in (None: none has)."""
        with infra("list model versions"):
            try:
                found = self._client.search_model_versions(f"name='{name}'")
            except Exception as exc:
                if looks_like_connection_error(exc):
                    raise
                return None
        records = [passed_from_tags(name, str(mv.version), env, dict(mv.tags or {})) for mv in found]
        passed = [r for r in records if r is not None]
        return max(passed, key=lambda r: (r.at, int(r.version))) if passed else None

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        with infra("tag the version"):
            self._version(name, version)
            for key, value in tags.items():
                self._client.set_model_version_tag(name, version, key, value)


def _run_model_uri(ref: str) -> str:
    if ref.startswith(("runs:/", "models:/")) or "/" in ref or Path(ref).exists():
        return ref
    return f"runs:/{ref}/{MODEL_ARTIFACT}"


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."
