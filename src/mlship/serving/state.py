"""What a server's endpoints share: the settings, the model once loaded, its batcher, metrics and logs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlship.serving.batching import MicroBatcher
from mlship.serving.logs import AccessLog, PredictionLog
from mlship.serving.metrics import ServingMetrics
from mlship.serving.model import ModelSource, ServedModel
from mlship.serving.schema import RequestSchema
from mlship.settings import Settings


@dataclass
class ServerState:
    """Everything the endpoints share; `ready` flips once, after the warm-up prediction."""

    settings: Settings
    source: ModelSource | None
    color: str
    git_sha: str
    metrics: ServingMetrics
    access: AccessLog
    prediction_log_path: Path | None
    model: ServedModel | None = None
    schema: RequestSchema | None = None
    batcher: MicroBatcher | None = None
    predictions: PredictionLog | None = None
    ready: bool = False
    failure: str | None = None
    on_fatal: Callable[[BaseException], None] | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.model.name if self.model else self.source.name if self.source else "unknown"

    @property
    def version(self) -> str:
        return self.model.version if self.model else self.source.version if self.source else "unknown"

    @property
    def run_id(self) -> str | None:
        return self.model.run_id if self.model else self.source.run_id if self.source else None
