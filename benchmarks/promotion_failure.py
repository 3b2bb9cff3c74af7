"""What a failed promotion costs clients: requests answered with an error (or by the candidate)
while `--promote-shadow` / `--promote-canary` runs and after it, on the `local` target.

    uv run python benchmarks/promotion_failure.py [--rate 40] [--window 10]

v1 is live on blue; v2 runs on green as a shadow (every request copied) or a 50 % canary, and
breaks in one of two ways:
  broken-before   v2 already answers 500 before the promotion starts (its copies or its canary
                  share failed): the promotion must refuse it before the switch.
  breaks-at-switch  v2 passes every check before the switch (its smoke tests included; a shadow
                  gets a 5 % sample, so few copies reach it first) and answers 500 from then on:
                  verification fails; `early_stop` on vs off shows what the sequential early stop
                  saves (off = verification watches the whole window).
A keep-alive client posts one-record predictions through the router at `--rate` per second for the
whole promotion; afterwards 40 more requests count who answers. Fake model servers
(tests/support/deploy_doubles/fake_server.py), `deploy.verify_window_s = --window` (the default is 10 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from _common import save

from mlship.deploy import verify as verify_module
from mlship.errors import MlshipError
from tests.support.deploy_doubles.harness import RECORDS, fake_release, local_controller

REPO = Path(__file__).resolve().parents[1]


def _who(response: httpx.Response) -> str:
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    return "v" + str(response.json()["model"]["version"])


class Client(threading.Thread):
    """One keep-alive client at a fixed rate, bounded in time (it stops when told or after 300 s)."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, 1.0 / rate
        self.seen: Counter[str] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 300
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    self.seen[_who(client.post("/predict", json={"records": RECORDS[:1]}))] += 1
                except httpx.HTTPError as exc:
                    self.seen[type(exc).__name__] += 1
                time.sleep(self.interval)


def scenario(kind: str, breaks: str, *, early_stop: bool, rate: float, window: float) -> dict[str, Any]:
    real = verify_module.unreachable
    if not early_stop:
        verify_module.unreachable = lambda *args, **kwargs: False
    with tempfile.TemporaryDirectory(prefix="mlship-promote-bench-") as tmp:
        ctl = local_controller(Path(tmp), verify_window_s=1.0)  # the deploys: a short verification
        try:
            ctl.deploy(fake_release("1"))
            # 21 predictions pass the deploy's smoke test; a canary's verification at 50 % adds 10-20,
            # the promotion's own smoke test 21 more (and a canary its share of the client's requests)
            n = {"broken-before": 21 if kind == "shadow" else 60, "breaks-at-switch": 50 if kind == "shadow" else 90}
            fault = f"errors_after:{n[breaks]}"
            if kind == "shadow":  # breaks-at-switch: a 5 % sample, so few copies reach v2 before the switch
                sample = 1.0 if breaks == "broken-before" else 0.05
                ctl.deploy(fake_release("2", fault), strategy="shadow", sample=sample)
            else:
                ctl.deploy(fake_release("2", fault), strategy="canary", weight=50)
            ctl.cfg = ctl.cfg.model_copy(update={"verify_window_s": window})  # the promotion: the window asked
            url = ctl.target.live_url()
            if breaks == "broken-before":  # traffic until v2 has recorded its failures
                with httpx.Client(base_url=url, timeout=10.0) as warm:
                    for _ in range(120):
                        warm.post("/predict", json={"records": RECORDS[:1]})
            client = Client(url, rate)
            client.start()
            started = time.monotonic()
            try:
                ctl.promote_shadow() if kind == "shadow" else ctl.promote_canary()
                outcome = "promoted"
            except MlshipError as exc:
                outcome = f"exit {exc.exit_code}: {exc.message}"
            took = time.monotonic() - started
            client.stop.set()
            client.join(timeout=30)
            after: Counter[str] = Counter()
            with httpx.Client(base_url=url, timeout=10.0) as check:
                for _ in range(40):
                    after[_who(check.post("/predict", json={"records": RECORDS[:1]}))] += 1
        finally:
            ctl.target.down()
            verify_module.unreachable = real
    during = dict(client.seen)
    failed = sum(c for k, c in during.items() if k != "v1")
    return {
        "kind": kind,
        "breaks": breaks,
        "early_stop": early_stop,
        "outcome": outcome,
        "promotion_s": round(took, 2),
        "during": during,
        "not_v1_during": failed,
        "after_40": dict(after),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    runs = []
    for kind in ("shadow", "canary"):
        runs.append(scenario(kind, "broken-before", early_stop=True, rate=args.rate, window=args.window))
        for early in (True, False):
            runs.append(scenario(kind, "breaks-at-switch", early_stop=early, rate=args.rate, window=args.window))
    save("promotion_failure", {"rate_per_s": args.rate, "verify_window_s": args.window, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
