"""mlship as a library: each `mlship` command's stage function and the result it returns.

Names resolve lazily (PEP 562): `import mlship` imports none of mlflow, scikit-learn or pandas,
so `mlship --help` stays instant; the first use of a name imports its module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mlship.batch.engine import predict_batch
    from mlship.batch.run import BatchResult
    from mlship.data.synth import write_synthetic
    from mlship.data.validation import ValidationReport, validate_file
    from mlship.deploy.controller import Controller
    from mlship.deploy.factory import controller
    from mlship.deploy.release import Release
    from mlship.deploy.result import DeployResult
    from mlship.errors import ConfigError, InfraError, MlshipError, PipelineRejected
    from mlship.job import RunSummary, run
    from mlship.model.gates.run import register_challenger, run_gate
    from mlship.model.gates.types import GateReport, GateResult
    from mlship.model.train import TrainResult, train
    from mlship.monitoring.abtest_analysis import AbReport, Arm
    from mlship.monitoring.abtest_analysis import analyse as analyse_abtest
    from mlship.monitoring.drift import DriftReport
    from mlship.monitoring.drift import detect as detect_drift
    from mlship.pr_comment import Posted, comment
    from mlship.registry import Registry, ResolvedModel, VersionInfo
    from mlship.security.trivy import ScanGateResult, scan_gate
    from mlship.serving.server import serve
    from mlship.settings import Settings, load_settings, settings_from_mapping

# Public name -> (module, attribute). The command each serves is in the README's table
# "mlship from Python"; tests/unit/test_public_api.py pins this list.
_EXPORTS: dict[str, tuple[str, str]] = {
    # configuration
    "Settings": ("mlship.settings", "Settings"),
    "load_settings": ("mlship.settings", "load_settings"),
    "settings_from_mapping": ("mlship.settings", "settings_from_mapping"),
    # mlship data synth / validate
    "write_synthetic": ("mlship.data.synth", "write_synthetic"),
    "validate_file": ("mlship.data.validation", "validate_file"),
    "ValidationReport": ("mlship.data.validation", "ValidationReport"),
    # mlship train
    "train": ("mlship.model.train", "train"),
    "TrainResult": ("mlship.model.train", "TrainResult"),
    # mlship gate [--register]
    "run_gate": ("mlship.model.gates.run", "run_gate"),
    "register_challenger": ("mlship.model.gates.run", "register_challenger"),
    "GateReport": ("mlship.model.gates.types", "GateReport"),
    "GateResult": ("mlship.model.gates.types", "GateResult"),
    # mlship register / promote / models
    "Registry": ("mlship.registry", "Registry"),
    "ResolvedModel": ("mlship.registry", "ResolvedModel"),
    "VersionInfo": ("mlship.registry", "VersionInfo"),
    # mlship run
    "run": ("mlship.job", "run"),
    "RunSummary": ("mlship.job", "RunSummary"),
    # mlship deploy / rollback / status
    "controller": ("mlship.deploy.factory", "controller"),
    "Controller": ("mlship.deploy.controller", "Controller"),
    "DeployResult": ("mlship.deploy.result", "DeployResult"),
    "Release": ("mlship.deploy.release", "Release"),
    # mlship serve
    "serve": ("mlship.serving.server", "serve"),
    # mlship drift
    "detect_drift": ("mlship.monitoring.drift", "detect"),
    "DriftReport": ("mlship.monitoring.drift", "DriftReport"),
    # mlship abtest
    "analyse_abtest": ("mlship.monitoring.abtest_analysis", "analyse"),
    "Arm": ("mlship.monitoring.abtest_analysis", "Arm"),
    "AbReport": ("mlship.monitoring.abtest_analysis", "AbReport"),
    # mlship predict-batch
    "predict_batch": ("mlship.batch.engine", "predict_batch"),
    "BatchResult": ("mlship.batch.run", "BatchResult"),
    # mlship scan-gate
    "scan_gate": ("mlship.security.trivy", "scan_gate"),
    "ScanGateResult": ("mlship.security.trivy", "ScanGateResult"),
    # mlship comment
    "comment": ("mlship.pr_comment", "comment"),
    "Posted": ("mlship.pr_comment", "Posted"),
    # what a stage raises, and the exit code each becomes
    "MlshipError": ("mlship.errors", "MlshipError"),
    "PipelineRejected": ("mlship.errors", "PipelineRejected"),
    "ConfigError": ("mlship.errors", "ConfigError"),
    "InfraError": ("mlship.errors", "InfraError"),
}

__all__ = [
    "AbReport",
    "Arm",
    "BatchResult",
    "ConfigError",
    "Controller",
    "DeployResult",
    "DriftReport",
    "GateReport",
    "GateResult",
    "InfraError",
    "MlshipError",
    "PipelineRejected",
    "Posted",
    "Registry",
    "Release",
    "ResolvedModel",
    "RunSummary",
    "ScanGateResult",
    "Settings",
    "TrainResult",
    "ValidationReport",
    "VersionInfo",
    "analyse_abtest",
    "comment",
    "controller",
    "detect_drift",
    "load_settings",
    "predict_batch",
    "register_challenger",
    "run",
    "run_gate",
    "scan_gate",
    "serve",
    "settings_from_mapping",
    "train",
    "validate_file",
    "write_synthetic",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562) and keep the name here for the next."""
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        # Not ours: an AttributeError lets `from mlship import cli` fall through to the submodule.
        raise AttributeError(f"module 'mlship' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
