"""The one reference to a pinned model (ref, uri, name, version, run id) from resolution to serving, and its label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def model_label(name: str | None, version: str | None, fallback: str) -> str:
    """How a model is named to people: `card-fraud v3`, or `fallback` (its URI) when it has no registered version."""
    return f"{name} v{version}" if name and version else fallback


@dataclass(frozen=True)
class ModelRef:
    """A model reference pinned to something immutable: what gets compared, served, deployed.

    `ref` is what the user wrote (an alias, a path, a run URI); `uri` is what it named when it
    was pinned. `ResolvedModel`, `Release` and `ModelSource` are this record plus their own fields.
    """

    ref: str
    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None

    @property
    def label(self) -> str:
        """Human name: `card-fraud v3`, or the URI for unregistered models."""
        return model_label(self.name, self.version, self.uri)

    def identity(self) -> dict[str, Any]:
        """The pinned model's fields alone, to build a record that carries them (`Release.of`)."""
        return {"ref": self.ref, "uri": self.uri, "name": self.name, "version": self.version, "run_id": self.run_id}
