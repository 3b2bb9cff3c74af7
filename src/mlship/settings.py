"""One frozen, validated settings object, read from `[tool.mlship]` or a `--config` TOML file.

Nothing else in mlship reads configuration: every stage gets this object passed explicitly.
Relative paths are resolved against the directory of the file they were read from, so a
pipeline behaves the same whatever the current directory is.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlship.errors import ConfigError
from mlship.webhook import NOTIFY_EVENTS, WEBHOOK_ENV

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss")
"""Every metric mlship computes for a binary classifier (log_loss is lower-is-better)."""

DEFAULT_CATEGORICAL = ["merchant_category", "country", "device_type"]
DEFAULT_NUMERIC = ["amount", "hour", "account_age_days", "num_tx_24h"]
DEFAULT_NAMESPACES = {"staging": "mlship-staging", "production": "mlship-production"}
"""Each environment's namespace, as deployment/k8s/overlays/<env> declares it."""
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateSettings(_Section):
    """`[tool.mlship.gates]`: what a candidate must satisfy before it may ship."""

    metric_floors: dict[str, float] = Field(default_factory=lambda: {"roc_auc": 0.80, "pr_auc": 0.40})
    """Minimum held-out value of each metric (any but log_loss); an undefined metric fails."""
    primary_metric: str = "roc_auc"
    """The metric the candidate is compared with the champion on."""
    max_regression: float = Field(default=0.01, ge=0)
    """How much worse than the champion the candidate may be on `primary_metric` (interval's lower bound)."""
    bootstrap_samples: int = Field(default=1000, ge=100)
    """Stratified paired-bootstrap replicates behind every interval."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """Confidence of the intervals and tests (champion comparison, fairness bounds, flip-rate test)."""
    max_demographic_parity_difference: float = Field(default=0.10, ge=0, le=1)
    """Largest allowed gap in selection rate between groups of `sensitive_feature`."""
    max_equalized_odds_difference: float = Field(default=0.15, ge=0, le=1)
    """Largest allowed gap in true- or false-positive rate between groups of `sensitive_feature`."""
    fairness_inconclusive: Literal["warn", "fail"] = "warn"
    """Not enough evidence on a disparity (its interval straddles the limit, or a group has too few
    positives or negatives): "warn" passes the gate with a visible ⚠ recorded on the run and the
    registered version; "fail" fails it, for teams that must show fairness before shipping."""
    min_group_size: int = Field(default=30, ge=1)
    """Rows a group needs to be measured at all; the intervals then say whether that is enough."""
    min_group_class_rows: int = Field(default=10, ge=1)
    """Positives, and negatives, a group needs for its TPR and FPR to enter equalized odds."""
    insufficient_group_fails: bool = True
    """A group under `min_group_size` rows fails the gate (false: a visible ⚠ instead)."""
    latency_p99_ms: float = Field(default=50.0, gt=0)
    """Budget for the p99 CPU time of a one-row prediction on the server's path."""
    latency_rows: int = Field(default=200, ge=10)
    """One-row predictions timed for the latency gate."""
    max_model_size_mb: float = Field(default=50.0, gt=0)
    """Budget for the model directory on disk (MB = 10⁶ bytes)."""
    robustness_noise: float = Field(default=0.01, ge=0)
    """Gaussian noise added to every numeric feature, as a fraction of its std, by the robustness gate."""
    max_flip_rate: float = Field(default=0.02, ge=0, le=1)
    """Largest plausible share of predictions that noise may flip (one-sided binomial test at `confidence`)."""
    reproducibility: bool = False
    """Opt-in gate: two fresh trainings on the same split and seed must predict identically."""

    @field_validator("fairness_inconclusive", mode="before")
    @classmethod
    def _pass_is_warn(cls, v: object) -> object:
        """ "pass" (before three-state verdicts) let an inconclusive result through: that is "warn" now."""
        return "warn" if v == "pass" else v

    @field_validator("metric_floors")
    @classmethod
    def _known_floor_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        allowed = [m for m in METRICS if m != "log_loss"]
        for name in v:
            if name not in allowed:
                raise ValueError(f"unknown metric {name!r}; allowed: {', '.join(allowed)}")
        return v

    @field_validator("primary_metric")
    @classmethod
    def _known_primary(cls, v: str) -> str:
        allowed = [m for m in METRICS if m != "log_loss"]
        if v not in allowed:
            raise ValueError(f"unknown metric {v!r}; allowed: {', '.join(allowed)}")
        return v


class ServeSettings(_Section):
    """`[tool.mlship.serve]`: the model server's limits and micro-batching."""

    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    """Largest request body; a larger one is refused with 413 before it is read."""
    max_batch_size: int = Field(default=256, ge=1)
    """Rows per model call. Batches over 64 rows take the compiled forest's per-tree path, whose cost
    per row is about a third of the 64-row walk's: queued requests are cheaper predicted together."""
    max_batch_wait_ms: float = Field(default=2.0, ge=0)
    """How long a micro-batch waits for more requests before the model call."""
    prediction_log_sample: float = Field(default=0.1, ge=0, le=1)
    """Share of predictions written to `<state_dir>/predictions/<color>.jsonl` (what `mlship drift` reads)."""
    graceful_timeout_s: float = Field(default=30.0, gt=0)
    """On SIGTERM, how long in-flight requests may take to drain."""


class DeploySettings(_Section):
    """`[tool.mlship.deploy]`: blue-green timings and the checks that guard a switch."""

    app: str = "mlship-model"
    """kubernetes, gitops: the app's name (objects `<app>-<color>`, Service `<app>`); must match the manifests."""
    port: int = Field(default=8000, ge=1, le=65535)
    """local target: the port of the live URL, `http://127.0.0.1:<port>`."""
    namespace: str | None = None
    """kubernetes: one namespace for every environment (their objects are named and labelled per
    environment, so they can share it); unset: `namespaces[env]`."""
    namespaces: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NAMESPACES))
    """kubernetes: the namespace of each environment (the overlays declare these defaults)."""
    manifests: Path = Path("deployment/k8s")
    """kubernetes: the kustomize folder (base and overlays) a deploy renders."""
    ready_timeout_s: float = Field(default=60.0, gt=0)
    """The wait for a color to be ready. kubernetes: at least this, and as long as the manifests'
    probes allow (startupProbe, then readinessProbe) plus `pull_allowance_s`."""
    pull_allowance_s: float = Field(default=300.0, ge=0)
    """kubernetes: added to the probes' budget for pulling the image on a node that lacks it."""
    pull_secret: str | None = None
    """kubernetes: the docker-registry Secret (in the environment's namespace) the pods pull the image with."""
    smoke_latency_ms: float = Field(default=250.0, gt=0)
    """Smoke test before the switch: p95 of 20 one-row predictions must fit this."""
    verify_window_s: float = Field(default=10.0, ge=0)
    """After the switch, how long golden requests are sent through the live path before the deploy is kept."""
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    """Largest error rate allowed during verification; more switches back."""
    max_p99_ms: float = Field(default=250.0, gt=0)
    """Largest p99 latency allowed during verification; more switches back."""
    rollback_window_s: float = Field(default=600.0, ge=0)
    """How long the previous color keeps running, so `mlship rollback` is one switch."""
    history: int = Field(default=10, ge=5)
    """Releases kept in the history (locally `<state_dir>/deploy/<env>/history.json`); a late rollback uses it."""

    @field_validator("namespace")
    @classmethod
    def _namespace_name(cls, v: str | None) -> str | None:
        if v is not None and not _DNS_LABEL.fullmatch(v):
            raise ValueError(f"{v!r} is not a namespace name (lower-case letters, digits and '-', at most 63)")
        return v

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, v: dict[str, str]) -> dict[str, str]:
        for env, name in v.items():
            if env not in DEFAULT_NAMESPACES:
                raise ValueError(f"unknown environment {env!r}; use {', '.join(DEFAULT_NAMESPACES)}")
            cls._namespace_name(name)
        return v

    def namespace_for(self, env: str) -> str:
        """Where `env`'s objects live: `namespace` if set, else `namespaces[env]`, else the overlay's default."""
        if self.namespace:
            return self.namespace
        return self.namespaces.get(env) or DEFAULT_NAMESPACES.get(env, f"mlship-{env}")


class DriftSettings(_Section):
    """`[tool.mlship.drift]`: effect-size thresholds (p-values vanish at large n)."""

    psi_warn: float = Field(default=0.10, ge=0)
    """PSI at or above this is a warning for a feature."""
    psi_fail: float = Field(default=0.25, ge=0)
    """PSI at or above this makes a feature drift."""
    wasserstein_threshold: float = Field(default=0.10, ge=0)
    """A numeric feature drifts when its Wasserstein distance (in reference std) reaches this."""
    jensen_shannon_threshold: float = Field(default=0.10, ge=0, le=1)
    """A categorical feature drifts when its Jensen-Shannon distance (base 2) reaches this."""
    drift_share: float = Field(default=0.5, gt=0, le=1)
    """The dataset drifts (exit 1) when at least this share of features drift."""


class NotifySettings(_Section):
    """`[tool.mlship.notify]`: the payload format and which events go to the webhook (its URL: MLSHIP_WEBHOOK_URL)."""

    format: Literal["slack", "json"] = "slack"
    """Payload: a Slack message, or plain JSON for any other receiver."""
    events: list[Literal["gate", "deploy", "rollback", "failover", "drift", "canary"]] = Field(
        default_factory=lambda: list(NOTIFY_EVENTS)  # type: ignore[arg-type]
    )
    """Which events are sent to the webhook."""
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    """How long one webhook call may take (a failed notice warns, never fails the command)."""

    @model_validator(mode="before")
    @classmethod
    def _no_url_in_files(cls, raw: Any) -> Any:
        """A URL here would be committed with the project: refuse it, naming where it belongs."""
        if isinstance(raw, dict) and any(k in raw for k in ("url", "webhook", "webhook_url")):
            raise ValueError(f"the webhook URL is a secret: set it in the environment variable {WEBHOOK_ENV}")
        return raw


class ScanSettings(_Section):
    """`[tool.mlship.scan]`: the image scan gate's policy (`mlship scan-gate`)."""

    fail_on_unfixed: bool = False
    """Also fail on vulnerabilities at or above the threshold that have no fixed version yet
    (by default they are listed, not failed; `scan-gate --strict` fails on them too)."""


class Settings(_Section):
    """`[tool.mlship]`: the whole configuration of one project."""

    model_name: str = "card-fraud"
    """Registered model name in MLflow (`models:/<model_name>@champion`)."""
    target: str = "is_fraud"
    """The label column, binary 0/1."""
    id_column: str | None = "transaction_id"
    """A row identifier, never a model input (empty: none)."""
    sensitive_feature: str | None = "customer_segment"
    """Column audited by the fairness gates, never a model input (empty: no fairness gates)."""
    categorical_features: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORICAL))
    """Categorical model inputs."""
    numeric_features: list[str] = Field(default_factory=lambda: list(DEFAULT_NUMERIC))
    """Numeric model inputs."""
    task: Literal["binary_classification"] = "binary_classification"
    """What the model does; binary classification is the one supported."""
    data: Path = Path("data/transactions.parquet")
    """Training data, CSV or Parquet (what `--data` defaults to)."""
    eval_data: Path | None = None
    """Data the gate scores whole; unset: the held-out split of `data`."""
    suite: Path = Path("data/expectations/transactions.json")
    """The Great Expectations suite `mlship validate` checks `data` against."""
    estimator: str = "mlship.model.estimators:gradient_boosting"
    """`package.module:function(categorical, numeric, seed)` returning a scikit-learn estimator."""
    seed: int = 42
    """Seed of the split, the estimator and the synthetic data."""
    test_size: float = Field(default=0.2, gt=0, lt=1)
    """Share of `data` held out for evaluation."""
    synth_rows: int = Field(default=20_000, ge=100)
    """Rows `mlship run` synthesises when `data` is missing."""
    state_dir: Path = Path(".mlship")
    """Where mlship keeps its state: the MLflow store, deploy state, reports."""
    report_dir: Path | None = None
    """Where reports go; unset: `<state_dir>/reports`."""
    tracking_uri: str | None = None
    """MLflow tracking server; unset: sqlite under `state_dir`. `MLFLOW_TRACKING_URI` wins."""
    experiment: str = "mlship"
    """MLflow experiment the runs are logged to."""
    gates: GateSettings = Field(default_factory=GateSettings)
    """The quality gates: `[tool.mlship.gates]`."""
    serve: ServeSettings = Field(default_factory=ServeSettings)
    """The model server: `[tool.mlship.serve]`."""
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    """Blue-green deploys: `[tool.mlship.deploy]`."""
    drift: DriftSettings = Field(default_factory=DriftSettings)
    """Drift thresholds: `[tool.mlship.drift]`."""
    notify: NotifySettings = Field(default_factory=NotifySettings)
    """The webhook: `[tool.mlship.notify]`."""
    scan: ScanSettings = Field(default_factory=ScanSettings)
    """The image scan gate's policy: `[tool.mlship.scan]`."""
    root: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("sensitive_feature", mode="before")
    @classmethod
    def _empty_means_none(cls, v: object) -> object:
        """TOML has no null: `sensitive_feature = ""` switches the fairness gates off."""
        return None if v == "" else v

    @field_validator("estimator")
    @classmethod
    def _estimator_ref(cls, v: str) -> str:
        module, _, func = v.partition(":")
        if not module or not func:
            raise ValueError(f"{v!r} is not of the form 'package.module:function'")
        return v

    @model_validator(mode="after")
    def _features_consistent(self) -> Settings:
        features = self.categorical_features + self.numeric_features
        if not features:
            raise ValueError("no features: set categorical_features and/or numeric_features")
        dupes = sorted({f for f in features if features.count(f) > 1})
        if dupes:
            raise ValueError(f"features listed twice: {', '.join(dupes)}")
        if self.target in features:
            raise ValueError(f"the target {self.target!r} is also listed as a feature")
        return self

    # Paths resolved against the project root -------------------------------------------------

    def path(self, p: Path | str) -> Path:
        """Resolve a configured path against the project root (absolute paths pass through)."""
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    @property
    def features(self) -> list[str]:
        """Model inputs, in a stable order: categorical first, then numeric."""
        return [*self.categorical_features, *self.numeric_features]

    @property
    def data_path(self) -> Path:
        return self.path(self.data)

    @property
    def suite_path(self) -> Path:
        return self.path(self.suite)

    @property
    def state_path(self) -> Path:
        return self.path(self.state_dir)

    @property
    def reports_path(self) -> Path:
        return self.path(self.report_dir) if self.report_dir else self.state_path / "reports"

    @property
    def resolved_tracking_uri(self) -> str:
        """`MLFLOW_TRACKING_URI` wins, then the configured URI, then the embedded sqlite file."""
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.state_path / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.state_path / "artifacts").resolve()


ALLOWED_KEYS = tuple(k for k in Settings.model_fields if k != "root")


def load_settings(config: Path | None = None, *, cwd: Path | None = None) -> Settings:
    """Read settings from `config` (top-level keys) or from `[tool.mlship]` of ./pyproject.toml.

    No file, or a pyproject without `[tool.mlship]`, gives the defaults rooted at `cwd`.
    Raises ConfigError (exit 2) naming the offending key and what is allowed.
    """
    cwd = cwd or Path.cwd()
    if config is not None:
        source = config if config.is_absolute() else cwd / config
        if not source.is_file():
            raise ConfigError(f"config file {config} does not exist", hint="pass an existing TOML file to --config")
        raw = _read_toml(source)
        root = source.parent
    else:
        source = cwd / "pyproject.toml"
        raw = _read_toml(source).get("tool", {}).get("mlship", {}) if source.is_file() else {}
        root = cwd
    return settings_from_mapping(raw, root=root, source=str(source))


def defaults_note(config: Path | None, *, cwd: Path | None = None) -> str | None:
    """One line saying the built-in example settings apply, or None when a configuration was found.

    Outside a project the card-fraud defaults would otherwise apply silently, and a user's own
    data would fail on columns they never configured.
    """
    if config is not None:
        return None
    source = (cwd or Path.cwd()) / "pyproject.toml"
    try:
        if source.is_file() and "mlship" in _read_toml(source).get("tool", {}):
            return None
    except ConfigError:
        return None  # load_settings reports the broken file itself
    d = Settings()
    return (
        f"no --config and no [tool.mlship] in {source}: using the built-in card-fraud example settings "
        f"(target {d.target!r}, {len(d.features)} features, data {d.data}; see README 'Configuration')"
    )


def settings_from_mapping(raw: dict[str, Any], *, root: Path, source: str = "settings") -> Settings:
    """Validate a mapping of settings; the single place that turns bad keys into one clear line."""
    if "root" in raw:
        raise ConfigError(f"{source}: unknown key 'root'", hint=f"allowed keys: {', '.join(ALLOWED_KEYS)}")
    try:
        return Settings(**raw, root=root.resolve())
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "settings"
    if err["type"] == "extra_forbidden":
        section = _section_for(err["loc"])
        allowed = [k for k in section.model_fields if k != "root"]
        return f"{source}: unknown key '{key}'; allowed: {', '.join(allowed)}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{source}: invalid value for '{key}': {msg}"


def _section_for(loc: tuple[int | str, ...]) -> type[BaseModel]:
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return model


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the syntax error it names") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
