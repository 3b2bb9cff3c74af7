"""The module's typedefs, built offline (Module.id faked), and the CLI surface they define.

This is what the engine registers when it loads the module: `dagger call` accepts exactly
these functions and flags (names in kebab-case), enum values by member name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import anyio
import dagger
from ml_pipeline.main import MlPipeline


@dataclass
class Arg:
    name: str
    kind: str  # STRING_KIND, BOOLEAN_KIND, … or an object/enum name
    optional: bool
    enum: list[str] = field(default_factory=list)


@dataclass
class Function:
    name: str
    returns: str
    args: dict[str, Arg]


@cache
def module() -> Any:
    """The `module().withObject(…)…` chain the SDK sends the engine at registration."""
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
    return captured["module"]


def kebab(name: str) -> str:
    """The CLI spelling of an API name (tracking_uri / trackingUri → tracking-uri)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).replace("_", "-").lower()


def _type(typedef: Any) -> tuple[str, bool]:
    kind, optional = "", False
    for sel in typedef._ctx.selections:
        if sel.name == "withKind":
            kind = str(sel.args["kind"])
        elif sel.name in ("withObject", "withEnum") and "name" in sel.args:
            kind = str(sel.args["name"])
        elif sel.name == "withOptional":
            optional = bool(sel.args["optional"])
    return kind, optional


def _enums(mod: Any) -> dict[str, list[str]]:
    enums: dict[str, list[str]] = {}
    for sel in mod._ctx.selections:
        if sel.name != "withEnum":
            continue
        members = [s.args["name"] for s in sel.args["enum"]._ctx.selections if s.name == "withEnumMember"]
        name = next(s.args["name"] for s in sel.args["enum"]._ctx.selections if s.name == "withEnum")
        enums[name] = members
    return enums


@cache
def functions() -> dict[str, Function]:
    """Every function of the main object, keyed by its CLI name, with its CLI flags."""
    mod = module()
    enums = _enums(mod)
    out: dict[str, Function] = {}
    for sel in mod._ctx.selections:
        if sel.name != "withObject":
            continue
        for obj_sel in sel.args["object"]._ctx.selections:
            if obj_sel.name != "withFunction":
                continue
            fn = obj_sel.args["function"]
            first = fn._ctx.selections[0]
            returns, _ = _type(first.args["returnType"])
            args: dict[str, Arg] = {}
            for arg_sel in fn._ctx.selections:
                if arg_sel.name != "withArg":
                    continue
                kind, optional = _type(arg_sel.args["typeDef"])
                has_default = arg_sel.args.get("defaultValue") is not None or arg_sel.args.get("defaultPath")
                flag = kebab(arg_sel.args["name"])
                args[flag] = Arg(flag, kind, optional or bool(has_default), enums.get(kind, []))
            out[kebab(first.args["name"])] = Function(kebab(first.args["name"]), returns, args)
    return out
