"""A model server's request counters, read from its Prometheus text (`GET /metrics` on one pod)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mlship.deploy.targets.base import Signal


def parse_metrics(text: str) -> Signal | None:
    """Requests, 5xx and latency from a model server's Prometheus text.

    Reads a counter whose name contains "request" with a `status` (or `code`) label and a
    histogram whose name contains "latency" or "duration" (seconds); None if either is absent.
    """
    requests = errors = 0
    found_counter = False
    buckets: dict[float, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return None
    for family in families:
        if family.type == "counter" and "request" in family.name:
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                status = sample.labels.get("status") or sample.labels.get("code") or sample.labels.get("status_code")
                if status is None:
                    continue
                found_counter = True
                requests += int(sample.value)
                if str(status).startswith("5"):
                    errors += int(sample.value)
        elif family.type == "histogram" and ("latency" in family.name or "duration" in family.name):
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
    if not found_counter or not buckets:
        return None
    bounds = sorted(b for b in buckets if b != float("inf"))
    cumulative = [buckets[b] for b in bounds] + [buckets.get(float("inf"), buckets[bounds[-1]] if bounds else 0.0)]
    counts = [int(cumulative[0])] + [int(cumulative[i] - cumulative[i - 1]) for i in range(1, len(cumulative))]
    return Signal(requests, errors, tuple(counts), tuple(b * 1000.0 for b in bounds))
