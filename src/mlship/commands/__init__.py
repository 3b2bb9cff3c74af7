"""CLI commands, one module per pipeline area; each exposes `register(app)`.

Modules are discovered, so adding an area means adding a module here and nothing else; a module
whose name starts with `_` is a helper of the commands, not a command module.
Command modules import only typer at top level: heavy imports go inside command bodies.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

_registered: set[int] = set()


def register_all(app: typer.Typer) -> None:
    """Attach every area's commands to `app` (idempotent, so tests may call it freely)."""
    if id(app) in _registered:
        return
    _registered.add(id(app))
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(app)
