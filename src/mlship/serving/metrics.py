"""Prometheus metrics of one server, in a registry of its own (two apps in a process never mix).

Names are a contract with the deploy verification: a `*request*_total` counter with a
`status` label and one `*latency*` histogram in seconds. Nothing else carries "request"
with a status label or "latency" in its name, so those totals are never double counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from mlship.serving import v2

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ENDPOINTS = frozenset({"/predict", "/health", "/ready", "/version", "/metrics", "/docs", "/openapi.json"})


class ServingMetrics:
    """Requests by endpoint and status, errors, latency, predictions by class, batch sizes."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no doubled `*_created` series per scrape
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlship_requests",
            "HTTP requests answered, by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "mlship_errors",
            "Failed requests by endpoint and kind (client: 4xx, server: 5xx).",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlship_request_latency_seconds",
            "Time from request start to the end of the response, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "mlship_predictions", "Predicted rows by predicted class.", ["class"], registry=self.registry
        )
        self.batch_rows = Histogram(
            "mlship_batch_rows",
            "Rows per model call (micro-batching at work when above 1).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "mlship_model_call_seconds",
            "Time of one model call (a whole batch).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge("mlship_in_progress", "HTTP requests being handled right now.", registry=self.registry)
        self.synthetic = Counter(
            "mlship_synthetic",
            "mlship's own requests (smoke, verification, probes), by endpoint: also in mlship_requests.",
            ["endpoint"],
            registry=self.registry,
        )
        self.ready = Gauge("mlship_ready", "1 once the model is loaded and warmed.", registry=self.registry)
        self.info = Gauge(
            "mlship_model_info",
            "The model this server serves (value 1).",
            ["name", "version", "color"],
            registry=self.registry,
        )

    def observe_request(
        self, path: str, method: str, status: int, seconds: float, *, synthetic: bool = False, count_error: bool = True
    ) -> None:
        """One answered request; `count_error=False` for an answer that is not a failure (503 while warming up)."""
        endpoint = path if path in ENDPOINTS else v2.endpoint_label(path) or "other"  # a bounded label set
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if synthetic:
            self.synthetic.labels(endpoint).inc()
        if not count_error:
            return
        if status >= 500:
            self.errors.labels(endpoint, "server").inc()
        elif status >= 400:
            self.errors.labels(endpoint, "client").inc()

    def observe_batch(self, requests: int, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.model_seconds.observe(seconds)

    def count_predictions(self, labels: Any) -> None:
        """Count labels per class (a list, or an array: counted without a Python object per row)."""
        counts: dict[str, int] = {}
        if isinstance(labels, np.ndarray) and labels.dtype != object:
            values, numbers = np.unique(labels, return_counts=True)
            counts = {str(v): n for v, n in zip(values.tolist(), numbers.tolist(), strict=True)}
        else:
            for label in labels:
                key = str(label)
                counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            self.predictions.labels(key).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
