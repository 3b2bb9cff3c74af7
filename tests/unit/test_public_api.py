"""The public library surface: `mlship.__all__` is pinned, every name resolves, and `import mlship` stays light."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import mlship

PUBLIC = [
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

HEAVY = ("mlflow", "sklearn", "pandas", "numpy", "scipy", "great_expectations", "fastapi", "uvicorn", "pydantic")


def test_the_public_names_are_pinned() -> None:
    """Adding or removing a public name is a decision: change this list with it."""
    assert mlship.__all__ == PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves_to_a_function_or_class(name: str) -> None:
    value = getattr(mlship, name)
    assert inspect.isclass(value) or inspect.isfunction(value), f"{name} is {value!r}"
    assert value.__module__.startswith("mlship."), value.__module__


def test_renamed_exports_are_the_stage_functions_themselves() -> None:
    """The two names that differ from their module's are the very functions the commands call."""
    from mlship.monitoring.abtest_analysis import analyse
    from mlship.monitoring.drift import detect

    assert mlship.detect_drift is detect
    assert mlship.analyse_abtest is analyse


def test_an_unknown_name_is_an_attribute_error_and_submodules_still_import() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = mlship.nope
    from mlship import cli, errors

    assert cli.__name__ == "mlship.cli"
    assert errors.__name__ == "mlship.errors"


def test_dir_lists_the_public_names() -> None:
    assert set(PUBLIC) <= set(dir(mlship))
    assert "__version__" in dir(mlship)


def _fresh(code: str) -> dict[str, object]:
    """Run `code` in a new interpreter (nothing imported yet) and return the JSON it prints."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_import_mlship_imports_no_heavy_library_and_none_of_its_modules() -> None:
    """The stage modules keep their heavy imports inside functions; `import mlship` imports none of them."""
    code = (
        "import json, sys; import mlship; "
        f"print(json.dumps({{'loaded': [m for m in {HEAVY!r} if m in sys.modules], "
        "'ours': sorted(m for m in sys.modules if m.startswith('mlship.')), 'all': len(mlship.__all__)}))"
    )
    assert _fresh(code) == {"loaded": [], "ours": [], "all": len(PUBLIC)}


def test_a_name_imports_only_its_own_module() -> None:
    """`mlship.scan_gate` reads JSON: using it must not drag in mlflow or scikit-learn."""
    code = (
        "import json, sys; import mlship; f = mlship.scan_gate; "
        "print(json.dumps({'loaded': [m for m in ('mlflow', 'sklearn') if m in sys.modules], "
        "'module': f.__module__, 'cached': 'scan_gate' in vars(mlship)}))"
    )
    assert _fresh(code) == {"loaded": [], "module": "mlship.security.trivy", "cached": True}
