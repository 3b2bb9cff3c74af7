"""The module registers offline: every function and argument is documented; deploys are uncached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dagger_plan import render
from ml_pipeline.main import MlPipeline
from module_typedefs import functions as cli_functions
from module_typedefs import module

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "lint",
    "test",
    "test_report",
    "validate_data",
    "train",
    "gate",
    "build",
    "scan",
    "scan_report",
    "scan_summary",
    "publish",
    "deploy",
    "rollback",
    "serve",
    "monitor",
    "batch_predict",
    "all",
}


@pytest.fixture(scope="module")
def typedefs() -> str:
    return render(module())


def functions() -> dict[str, Any]:
    return dict(MlPipeline.__dagger_module__._objects["MlPipeline"].functions)


def test_every_stage_is_a_function_with_a_description() -> None:
    fns = {name: fn for name, fn in functions().items() if name}
    assert set(fns) == EXPECTED
    for name, fn in fns.items():
        assert fn.doc, name


def test_every_argument_is_documented(typedefs: str) -> None:
    for name, fn in functions().items():
        for param in fn.parameters.values():
            assert param.doc, f"{name or 'constructor'}.{param.name} has no Doc"
    assert "withArg" in typedefs


# Function caching (7 days by default) is right for a result that only depends on the inputs.
# Where the outside world decides (the cluster, the registry, a tracking server whose champion
# moves, the vulnerability database), the function is not cached or only per session.
NEVER = {"deploy", "rollback", "publish", "all", "train", "gate"}
SESSION = {"scan", "scan_report", "scan_summary"}


def test_checks_and_cache_policies() -> None:
    fns = functions()
    assert {n for n, f in fns.items() if f.check} == {"lint", "test", "validate_data"}
    assert {n for n, f in fns.items() if n and f.cache_policy == "never"} == NEVER
    assert {n for n, f in fns.items() if n and f.cache_policy == "session"} == SESSION
    # everything else keeps the default cache: its result is a function of its inputs
    assert {n for n, f in fns.items() if n and f.cache_policy is None} == EXPECTED - NEVER - SESSION


def test_typedefs_carry_default_path_and_cache_policies(typedefs: str) -> None:
    assert "defaultPath='/'" in typedefs
    assert "'ci/sdk'" in typedefs and "'.mlship'" in typedefs
    assert typedefs.count("withCachePolicy(policy='Never')") == len(NEVER)
    assert typedefs.count("withCachePolicy(policy='PerSession')") == len(SESSION)
    assert typedefs.count("withCheck()") == 3  # lint, test, validate_data
    for fn in sorted(EXPECTED):
        assert f"function(name='{fn}'" in typedefs, fn


def test_dagger_json_pins_the_engine_matching_the_sdk() -> None:
    config = json.loads((ROOT / "dagger.json").read_text())
    assert config["name"] == "ml-pipeline" and config["source"] == "ci"
    assert config["sdk"]["source"] == "python"
    from importlib.metadata import version

    assert config["engineVersion"] == f"v{version('dagger-io')}"
    lock = (ROOT / "ci" / "uv.lock").read_text()
    assert f'name = "dagger-io"\nversion = "{version("dagger-io")}"' in lock


def test_enums_are_registered_with_their_members() -> None:
    """Report format, severity and environment are SDK enums: a typo is refused before anything runs."""
    fns = cli_functions()
    assert fns["scan-report"].args["format"].enum == ["SARIF", "JSON", "CYCLONEDX"]
    assert fns["scan"].args["severity"].enum == ["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
    assert fns["all"].args["severity"].enum == fns["scan"].args["severity"].enum
    for name in ("deploy", "rollback"):
        assert fns[name].args["env"].enum == ["STAGING", "PRODUCTION"], name
    assert "ignore-unfixed" in fns["all"].args
    # kubernetes needs an image: --image is required on deploy
    assert not fns["deploy"].args["image"].optional and fns["deploy"].args["tracking-uri"].optional
