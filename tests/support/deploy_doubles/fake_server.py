"""A stand-in model server for deploy tests: the HTTP surface of `mlship serve`, no model.

`python fake_server.py --model fake://NAME/VERSION[?fault=KIND[:N]] --host H --port P --color C`

Predictions are a deterministic function of the record (`fake_probability`), so tests know
the golden answers. Faults, chosen per release through the model URI (never an env var
that product code reads):
  exit            exit with code 3 before listening          (idle color fails to start)
  never_ready     /ready answers 503 forever                  (never gets ready)
  wrong           probabilities are off by 0.5                (fails the golden smoke check)
  errors_after:N  /predict answers 500 after N predictions    (serves errors after the switch)
  die_after:N     the process exits after N predictions       (dies during verification)
  slow:MS         every /predict sleeps MS milliseconds       (latency budget)
`--announce TEXT` prints TEXT with {port} filled in once listening (the kubectl double
uses it to print kubectl's "Forwarding from" line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

BOUNDS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Up to 30 s: a slow request on a loaded machine must read as slow, not as infinitely slow."""


def fake_probability(record: dict[str, Any]) -> float:
    text = json.dumps(record, sort_keys=True)
    return (sum(map(ord, text)) % 97) / 97.0


def parse_model(uri: str) -> tuple[str, str, str, int]:
    """fake://name/version?fault=kind:n (or models:/name/version) → (name, version, fault kind, n)."""
    parsed = urlparse(uri)
    if parsed.netloc:
        name, version = parsed.netloc, parsed.path.strip("/") or "1"
    else:
        name, _, version = parsed.path.strip("/").rpartition("/")
    fault = parse_qs(parsed.query).get("fault", [""])[0]
    kind, _, n = fault.partition(":")
    return name, version, kind, int(n or 0)


class State:
    def __init__(self, uri: str, color: str) -> None:
        self.name, self.version, self.fault, self.n = parse_model(uri)
        self.color = color
        self.lock = threading.Lock()
        self.predictions = 0
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * (len(BOUNDS_S) + 1)
        self.total_s = 0.0
        self.model: Any = None
        if uri.startswith(("models:/", "runs:/")):
            from mlship.registry import Registry

            self.model = Registry(os.environ["MLFLOW_TRACKING_URI"]).load_model(uri.split("?", maxsplit=1)[0])

    def probabilities(self, records: list[dict[str, Any]]) -> list[float]:
        if self.model is None:
            return [fake_probability(r) for r in records]
        import pandas as pd

        return [float(p) for p in self.model.predict_proba(pd.DataFrame.from_records(records))[:, 1]]

    def observe(self, status: int, seconds: float) -> None:
        with self.lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1
            self.total_s += seconds
            for i, bound in enumerate(BOUNDS_S):
                if seconds <= bound:
                    self.buckets[i] += 1
                    break
            else:
                self.buckets[-1] += 1

    def metrics(self) -> str:
        with self.lock:
            lines = ["# TYPE mlship_requests_total counter"]
            lines += [f'mlship_requests_total{{status="{s}"}} {c}' for s, c in sorted(self.by_status.items())]
            lines.append("# TYPE mlship_request_latency_seconds histogram")
            cumulative = 0
            for bound, count in zip(BOUNDS_S, self.buckets, strict=False):
                cumulative += count
                lines.append(f'mlship_request_latency_seconds_bucket{{le="{bound}"}} {cumulative}')
            cumulative += self.buckets[-1]
            lines.append(f'mlship_request_latency_seconds_bucket{{le="+Inf"}} {cumulative}')
            lines.append(f"mlship_request_latency_seconds_count {cumulative}")
            lines.append(f"mlship_request_latency_seconds_sum {self.total_s}")
        return "\n".join(lines) + "\n"


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return

        def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            head = f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(data)}\r\n\r\n"
            self.wfile.write(head.encode() + data)  # one write: no Nagle/delayed-ACK stall

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/ready":
                self._send(503 if state.fault == "never_ready" else 200, {"ready": state.fault != "never_ready"})
            elif self.path == "/version":
                self._send(200, {"model": {"name": state.name, "version": state.version}, "color": state.color})
            elif self.path == "/metrics":
                self._send(200, state.metrics(), "text/plain; version=0.0.4")
            else:
                self._send(404, {"detail": "not found"})

        def do_POST(self) -> None:
            start = time.perf_counter()
            body = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
            if self.path != "/predict":
                self._send(404, {"detail": "not found"})
                return
            with state.lock:
                state.predictions += 1
                count = state.predictions
            if state.fault == "die_after" and count > state.n:
                os._exit(1)
            if state.fault == "slow":
                time.sleep(state.n / 1000.0)
            if state.fault == "errors_after" and count > state.n:
                status, payload = 500, {"detail": "injected failure"}
            else:
                records = json.loads(body or b"{}").get("records", [])
                shift = 0.5 if state.fault == "wrong" else 0.0
                probs = [min(1.0, p + shift) for p in state.probabilities(records)]
                status = 200
                payload = {
                    "predictions": [int(p >= 0.5) for p in probs],
                    "probabilities": probs,
                    "model": {"name": state.name, "version": state.version},
                }
            self._send(status, payload)
            state.observe(status, time.perf_counter() - start)

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--color", default="blue")
    parser.add_argument("--announce", default="")
    args = parser.parse_args()
    state = State(args.model, args.color)
    if state.fault == "exit":
        print("fake server: injected start failure", file=sys.stderr)
        return 3
    server = ThreadingHTTPServer((args.host, args.port), make_handler(state))
    server.daemon_threads = True
    if args.announce:
        print(args.announce.format(port=server.server_address[1]), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
