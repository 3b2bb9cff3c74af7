"""Access log lines, the sampled prediction log and the Prometheus metrics' names and labels."""

from __future__ import annotations

import io
import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mlship.serving.logs import AccessLog, PredictionLog
from mlship.serving.metrics import ServingMetrics


def test_access_lines_are_one_json_object_each() -> None:
    stream = io.StringIO()
    log = AccessLog(color="blue", model_version="7", stream=stream)
    log.access("POST", "/predict", 200, 0.0123456)
    log.access("GET", "/health", 200, 0.0001)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first | {"ts": "x"} == {
        "ts": "x",
        "event": "access",
        "method": "POST",
        "path": "/predict",
        "status": 200,
        "latency_ms": 12.346,
        "color": "blue",
        "model_version": "7",
    }
    assert first["ts"].endswith("Z")


def test_prediction_log_samples_rows_and_writes_what_drift_reads(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "blue.jsonl"
    log = PredictionLog(path, sample=0.5, model_version="3", seed=1)
    rows = [{"amount": float(i), "country": "US"} for i in range(1000)]
    written = log.record(rows, [i % 2 for i in range(1000)], [i / 1000 for i in range(1000)])
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == written
    assert 400 < written < 600  # about half
    entry = lines[0]
    assert set(entry) == {"timestamp", "inputs", "prediction", "probability", "model_version"}
    i = int(entry["inputs"]["amount"])
    assert entry["prediction"] == i % 2
    assert entry["probability"] == i / 1000
    assert entry["model_version"] == "3"


def test_prediction_log_appends_and_a_zero_rate_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    for _ in range(2):
        log = PredictionLog(path, sample=1.0, model_version="1")
        log.record([{"a": 1.0}], [0], [0.1])
        log.close()
    assert len(path.read_text().splitlines()) == 2
    off = PredictionLog(tmp_path / "off.jsonl", sample=0.0, model_version="1")
    assert off.record([{"a": 1.0}], [0], [0.1]) == 0
    off.close()
    assert not (tmp_path / "off.jsonl").exists()


def test_metrics_follow_the_contract_the_deploy_verification_reads() -> None:
    m = ServingMetrics()
    m.observe_request("/predict", "POST", 200, 0.004)
    m.observe_request("/predict", "POST", 200, 0.006)
    m.observe_request("/predict", "POST", 422, 0.001)
    m.observe_request("/predict", "POST", 500, 0.002)
    m.observe_request("/nope/../x", "GET", 404, 0.001)
    m.count_predictions([0, 1, 1])
    m.observe_batch(3, 3, 0.002)
    text = m.render().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("mlship_requests_total", (("endpoint", "/predict"), ("method", "POST"), ("status", "200")))] == 2
    assert samples[("mlship_requests_total", (("endpoint", "other"), ("method", "GET"), ("status", "404")))] == 1
    assert samples[("mlship_errors_total", (("endpoint", "/predict"), ("kind", "server")))] == 1
    assert samples[("mlship_errors_total", (("endpoint", "/predict"), ("kind", "client")))] == 1
    assert samples[("mlship_predictions_total", (("class", "1"),))] == 2
    assert samples[("mlship_request_latency_seconds_count", (("endpoint", "/predict"),))] == 4
    assert samples[("mlship_batch_rows_sum", ())] == 3
    # exactly one counter with "request" and a status label, one histogram with "latency":
    fams = [f for f in text_string_to_metric_families(text)]
    assert [f.name for f in fams if "request" in f.name and f.type == "counter"] == ["mlship_requests"]
    histograms = [f.name for f in fams if f.type == "histogram" and ("latency" in f.name or "duration" in f.name)]
    assert histograms == ["mlship_request_latency_seconds"]
    assert "_created" not in text  # no per-series creation timestamps doubling the scrape


def test_two_servers_in_one_process_keep_separate_counts() -> None:
    a, b = ServingMetrics(), ServingMetrics()
    a.observe_request("/health", "GET", 200, 0.001)
    assert b"mlship_requests_total{" not in b.render()
    assert b"mlship_requests_total{" in a.render()
