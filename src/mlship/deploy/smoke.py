"""Smoke test of a color on its own endpoint before it takes any traffic.

Health, readiness, the version it claims, golden predictions (the model's logged input
example, compared with what the model itself predicts) and a latency budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mlship.deploy.synthetic import SYNTHETIC_HEADER  # smoke goes to the color directly: no proof needed


@dataclass(frozen=True)
class Golden:
    """Rows to predict and the probabilities the pinned model gives for them (None: unknown)."""

    records: list[dict[str, Any]]
    probabilities: list[float] | None = None


def golden_from_dir(model_dir: Path) -> Golden:
    """The model's logged input example, and what the model itself predicts for it (no example: no rows)."""
    from mlship.registry import load_model_dir, model_input_example  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

    example = model_input_example(model_dir)
    if example is None or example.empty:
        return Golden(records=[])
    model = load_model_dir(model_dir)
    proba = [float(p) for p in model.predict_proba(example)[:, 1]]
    records = [{str(k): _plain(v) for k, v in row.items()} for row in example.to_dict(orient="records")]
    return Golden(records=records, probabilities=proba)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON can carry."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class SmokeResult:
    url: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "checks": [c.__dict__ for c in self.checks]}


def smoke(
    url: str,
    golden: Golden,
    *,
    latency_budget_ms: float,
    expected_version: str | None = None,
    requests: int = 20,
    tolerance: float = 1e-6,
) -> SmokeResult:
    """Run every check against `url`; a check that cannot run counts as failed."""
    result = SmokeResult(url=url)
    with httpx.Client(base_url=url, timeout=10.0, headers={SYNTHETIC_HEADER: "smoke"}) as client:
        for path in ("/health", "/ready"):
            result.checks.append(_status_check(client, path))
        result.checks.append(_version_check(client, expected_version))
        result.checks.append(_golden_check(client, golden, tolerance))
        result.checks.append(_latency_check(client, golden, latency_budget_ms, requests))
    return result


def _status_check(client: httpx.Client, path: str) -> CheckResult:
    try:
        status = client.get(path).status_code
    except httpx.HTTPError as exc:
        return CheckResult(path, False, f"unreachable: {exc.__class__.__name__}")
    return CheckResult(path, status == 200, f"HTTP {status}")


def _version_check(client: httpx.Client, expected: str | None) -> CheckResult:
    try:
        response = client.get("/version")
        body = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError) as exc:
        return CheckResult("version", False, f"unreadable: {exc.__class__.__name__}")
    if response.status_code != 200:
        return CheckResult("version", False, f"HTTP {response.status_code}")
    got = body.get("version") or (body.get("model") or {}).get("version") if isinstance(body, dict) else None
    if expected is None:
        return CheckResult("version", True, f"serves {got}")
    return CheckResult("version", str(got) == str(expected), f"expected v{expected}, serves v{got}")


def _predict(client: httpx.Client, golden: Golden) -> tuple[int, Any]:
    response = client.post("/predict", json={"records": golden.records})
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def _golden_check(client: httpx.Client, golden: Golden, tolerance: float) -> CheckResult:
    if not golden.records:
        return CheckResult("golden", False, "no golden rows: the model has no input example")
    try:
        status, body = _predict(client, golden)
    except httpx.HTTPError as exc:
        return CheckResult("golden", False, f"unreachable: {exc.__class__.__name__}")
    if status != 200 or not isinstance(body, dict):
        return CheckResult("golden", False, f"HTTP {status}")
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(golden.records):
        return CheckResult("golden", False, f"expected {len(golden.records)} predictions")
    probabilities = body.get("probabilities")
    if golden.probabilities is None:
        return CheckResult("golden", True, f"{len(predictions)} predictions")
    if not isinstance(probabilities, list) or len(probabilities) != len(golden.probabilities):
        return CheckResult("golden", False, "no probabilities in the response")
    worst = max(abs(_positive(p) - e) for p, e in zip(probabilities, golden.probabilities, strict=True))
    return CheckResult("golden", worst <= tolerance, f"max |Δp| = {worst:.2g} (tolerance {tolerance:g})")


def _positive(p: Any) -> float:
    """A probability of the positive class, from a number or a [p0, p1] pair."""
    value = p[-1] if isinstance(p, list) else p
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.inf
    return out if math.isfinite(out) else math.inf


def _latency_check(client: httpx.Client, golden: Golden, budget_ms: float, n: int) -> CheckResult:
    one = Golden(records=golden.records[:1])
    if not one.records:
        return CheckResult("latency", False, "no golden rows to time")
    timings: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        try:
            status, _ = _predict(client, one)
        except httpx.HTTPError as exc:
            return CheckResult("latency", False, f"unreachable: {exc.__class__.__name__}")
        if status != 200:
            return CheckResult("latency", False, f"HTTP {status}")
        timings.append((time.perf_counter() - start) * 1000.0)
    timings.sort()
    p95 = timings[min(len(timings) - 1, math.ceil(0.95 * len(timings)) - 1)]
    return CheckResult("latency", p95 <= budget_ms, f"p95 {p95:.1f} ms (budget {budget_ms:g} ms)")
