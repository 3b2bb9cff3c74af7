"""The module registers offline: every function and argument is documented; deploys are uncached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import dagger
import pytest
from dagger_plan import render
from ml_pipeline.main import MlPipeline

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
    mod = MlPipeline.__dagger_module__
    mod._main_name = "MlPipeline"
    mod._main = mod._objects["MlPipeline"]
    captured: dict[str, Any] = {}

    async def fake_id(self: dagger.Module) -> str:
        captured["module"] = self
        return "module-id"

    original = dagger.Module.id
    dagger.Module.id = fake_id  # type: ignore[method-assign]
    try:
        anyio.run(mod._typedefs)
    finally:
        dagger.Module.id = original  # type: ignore[method-assign]
    return render(captured["module"])


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


def test_checks_and_cache_policies() -> None:
    fns = functions()
    assert {n for n, f in fns.items() if f.check} == {"lint", "test", "validate_data"}
    for name in ("deploy", "rollback", "publish", "all", "monitor"):
        assert fns[name].cache_policy == "never", name
    assert fns["scan"].cache_policy == "session"


def test_typedefs_carry_default_path_and_never_cache(typedefs: str) -> None:
    assert "defaultPath='/'" in typedefs
    assert "'ci/sdk'" in typedefs and "'.mlship'" in typedefs
    assert typedefs.count("withCachePolicy(policy='Never')") == 5  # publish, deploy, rollback, monitor, all
    assert typedefs.count("withCachePolicy(policy='PerSession')") == 2  # scan, scan_report
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
