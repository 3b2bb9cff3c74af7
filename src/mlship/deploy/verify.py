"""Verify a color while it takes live traffic: error rate and p99 from the counters.

Fail closed: a crashed color, counters that cannot be read or went backwards, or a window
in which not enough requests reached the color all fail the verification. The controller
sends golden requests through the live URL during the window, so a quiet service still
produces a signal.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx

from mlship.deploy.faults import checkpoint
from mlship.deploy.smoke import Golden
from mlship.deploy.targets.base import Signal, Target

MIN_REQUESTS = 10
"""Fewer requests than this on the verified color is a missing signal, not a pass."""

SIGNAL_GRACE_S = 60.0
"""How long past the window verification keeps probing for MIN_REQUESTS on a slow path
(a loaded runner, a port-forward) before it calls the signal missing."""

RUNNING_CHECK_S = 0.5
"""Liveness of the color is checked at most this often: on kubernetes each check is a kubectl call."""

TRAFFIC_HEADROOM = 2.0
"""The sequential rule's assumption: the rest of the window brings at most this many times the
request rate seen so far. Past `max_error_rate` × that many requests, the limit is unreachable."""


@dataclass
class VerifyResult:
    color: str
    ok: bool
    reason: str
    window_s: float
    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    probes: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "error_rate": self.error_rate}


def verify(
    target: Target,
    color: str,
    golden: Golden,
    *,
    window_s: float,
    max_error_rate: float,
    max_p99_ms: float,
    probe_rps: float = 25.0,
) -> VerifyResult:
    """Watch `color` for `window_s` (longer, bounded, until it has seen MIN_REQUESTS requests)."""
    started = time.monotonic()
    result = VerifyResult(color=color, ok=False, reason="", window_s=window_s)
    before = target.signal(color)
    if before is None:
        result.reason = f"missing signal: {color}'s counters are unreadable"
        return result
    deadline = started + window_s
    hard_deadline = started + window_s + max(2 * window_s, SIGNAL_GRACE_S)
    next_running_check = started
    body = {"records": golden.records[:1]}
    interval = 1.0 / probe_rps
    delta: Signal | None = Signal(0, 0, before.buckets, before.bounds_ms)
    halfway = started + window_s / 2
    lost = False
    headers = target.synthetic_headers("verify")  # through the router: with its proof
    with httpx.Client(base_url=target.traffic_url(color), timeout=5.0, headers=headers) as client:
        while True:
            tick = time.monotonic()
            if tick >= halfway:
                checkpoint("mid-verification")
            # a failed probe is counted by the router; an unreachable router is a missing signal
            with contextlib.suppress(httpx.HTTPError):
                client.post("/predict", json=body)
            result.probes += 1
            now = time.monotonic()
            if now >= next_running_check or now >= deadline:
                if not target.running(color):
                    result.reason = f"{color} stopped running during verification"
                    return _fill(result, delta, time.monotonic() - started)
                seen = target.signal(color)
                so_far = seen.since(before) if seen is not None else None
                lost = lost or so_far is None  # a reset seen now is a reset, whatever the last reading says
                if so_far is not None and unreachable(so_far, time.monotonic() - started, window_s, max_error_rate):
                    result.reason = (
                        f"error rate on {color} cannot get under {max_error_rate:.1%} in this window "
                        f"({so_far.errors}/{so_far.requests} failed after {time.monotonic() - started:.1f} s; "
                        "stopped early)"
                    )
                    return _fill(result, so_far, time.monotonic() - started)
                next_running_check = time.monotonic() + RUNNING_CHECK_S
            now = time.monotonic()
            if now >= deadline:
                after = target.signal(color)
                delta = after.since(before) if after is not None and not lost else None
                if delta is None:
                    result.reason = f"missing signal: {color}'s counters vanished or reset during the window"
                    return _fill(result, None, now - started)
                if delta.requests >= MIN_REQUESTS or now >= hard_deadline:
                    break
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    _fill(result, delta, time.monotonic() - started)
    p99 = delta.quantile_ms(0.99) if delta else None
    if result.requests < MIN_REQUESTS:
        result.reason = f"missing signal: only {result.requests} requests reached {color} (need {MIN_REQUESTS})"
    elif result.error_rate > max_error_rate:
        result.reason = (
            f"error rate {result.error_rate:.1%} on {color} exceeds {max_error_rate:.1%} "
            f"({result.errors}/{result.requests})"
        )
    elif p99 is None or p99 > max_p99_ms:
        result.reason = f"p99 latency {p99} ms on {color} exceeds {max_p99_ms:g} ms"
    else:
        result.ok = True
        result.reason = f"{result.requests} requests, {result.errors} errors, p99 ≤ {p99:g} ms"
    return result


def unreachable(seen: Signal, elapsed_s: float, window_s: float, max_error_rate: float) -> bool:
    """The sequential early stop: the errors seen already exceed the limit's share of the most
    requests the whole window can bring (at least MIN_REQUESTS; else TRAFFIC_HEADROOM times the
    rate so far over the window), so no run of successes can bring the rate back under it."""
    if seen.errors == 0 or elapsed_s <= 0:
        return False
    most = max(float(MIN_REQUESTS), TRAFFIC_HEADROOM * seen.requests * max(window_s, elapsed_s) / elapsed_s)
    return seen.errors > max_error_rate * most


def _fill(result: VerifyResult, delta: Signal | None, elapsed: float) -> VerifyResult:
    result.window_s = round(elapsed, 3)
    if delta is not None:
        result.requests = delta.requests
        result.errors = delta.errors
        result.p99_ms = delta.quantile_ms(0.99)
    return result
