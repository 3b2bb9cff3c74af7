"""Blue-green switch under constant load on the `local` target: failed requests (target 0 of
at least 10,000), switch time, and rollback time (target < 1 s), measured in one run.

    uv run python benchmarks/bluegreen.py [--connections 8] [--rate R] [--min-requests 12000] [--server fake|mlship]

A keep-alive load generator (raw asyncio, its own process) posts one-record predictions
through the router at a constant rate for the whole run; meanwhile v1 → v2 is deployed (smoke, switch,
verify) and then rolled back twice: once in-process, once as the `mlship rollback` CLI
(what a user types: process start, settings, lock, one switch). Then, under a fresh load
generator, a deploy of v3 is killed with SIGKILL mid-verification (the MLSHIP_FAULT_AT test
hook) and the next deploy (v3 again) recovers: `crash_run` counts the failed requests across
the kill and the recovery. Before the load starts,
the same clients saturate the color directly and through the router, to show the router
is not the bottleneck. A failed request is any
connection error or non-200 answer. `--server fake` runs colors as the test suite's fake
server (no model; default rate 1000/s); `--server mlship` trains the default pipeline on
synthetic data, registers it twice (v1, v2) in a throwaway MLflow store and runs real
`mlship serve` colors, built exactly as `mlship deploy` builds them (default rate 400/s,
which a loaded 2-core machine serves with room to spare for the controller).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import save

REPO = Path(__file__).resolve().parents[1]
MLSHIP = str(Path(sys.executable).with_name("mlship"))
RECORD = {
    "merchant_category": "grocery",
    "country": "US",
    "device_type": "mobile",
    "amount": 12.5,
    "hour": 9,
    "account_age_days": 400,
    "num_tx_24h": 2,
}


async def _client(port: int, stop: Any, out: dict[str, Any], interval: float) -> None:
    body = json.dumps({"records": [RECORD]}).encode()
    request = (
        f"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader = writer = None
    next_at = time.monotonic()
    while not stop.is_set():
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = await reader.readexactly(length)
            status = int(head.split(b" ", 2)[1])
            if status == 200:
                version = json.loads(payload)["model"]["version"]
                out["ok"] += 1
                out["versions"][version] = out["versions"].get(version, 0) + 1
                out["timeline"].append((time.time(), version))
            else:
                out["failed"] += 1
                out["statuses"][str(status)] = out["statuses"].get(str(status), 0) + 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            out["failed"] += 1
            out["statuses"][type(exc).__name__] = out["statuses"].get(type(exc).__name__, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)


def load_process(port: int, connections: int, rate: float, stop: Any, queue: Any) -> None:
    """Runs in its own process so the generator never competes with the controller's GIL."""
    out: dict[str, Any] = {"ok": 0, "failed": 0, "versions": {}, "statuses": {}, "timeline": []}

    async def main() -> None:
        class Flag:
            def is_set(self) -> bool:
                return bool(stop.is_set())

        interval = connections / rate if rate > 0 else 0.0
        await asyncio.gather(*(_client(port, Flag(), out, interval) for _ in range(connections)))

    started = time.time()
    asyncio.run(main())
    elapsed = time.time() - started
    # timeline compressed to version changes (the moments traffic moved)
    changes = []
    last = None
    for t, v in out["timeline"]:
        if v != last:
            changes.append((t, v))
            last = v
    queue.put(
        {
            "ok": out["ok"],
            "failed": out["failed"],
            "versions": out["versions"],
            "statuses": out["statuses"],
            "elapsed_s": elapsed,
            "changes": changes,
        }
    )


def saturate(port: int, connections: int, seconds: float) -> float:
    """Requests/s that `connections` keep-alive clients get from `port` as fast as they can."""
    stop = mp.Event()
    queue: Any = mp.Queue()
    gen = mp.Process(target=load_process, args=(port, connections, 0.0, stop, queue))
    gen.start()
    time.sleep(seconds)
    stop.set()
    out = queue.get(timeout=60)
    gen.join(timeout=30)
    return round(out["ok"] / out["elapsed_s"], 1)


def first_after(changes: list[tuple[float, str]], t0: float, version: str) -> float | None:
    for t, v in changes:
        if t >= t0 and v == version:
            return t - t0
    return None


def fake_controller(root: Path) -> tuple[Any, Any]:
    """Colors are the test suite's fake server: the switch machinery alone, no model."""
    from mlship.deploy.controller import Controller
    from mlship.deploy.targets.local import LocalTarget
    from mlship.deploy.targets.runners import ProcessRunner
    from mlship.settings import load_settings
    from tests.support.deploy_doubles.harness import FAKE_SERVER, FakeRegistry, fake_golden, fake_release

    settings = load_settings(cwd=root)
    runner = ProcessRunner(serve_command=[sys.executable, str(FAKE_SERVER)])
    target = LocalTarget(settings.state_path / "deploy" / "staging", port=settings.deploy.port, runner=runner)
    ctl = Controller(settings, target, "staging", golden=fake_golden, registry=FakeRegistry())  # type: ignore[arg-type]
    return ctl, fake_release


def mlship_controller(root: Path) -> tuple[Any, Any]:
    """A real model trained by mlship, registered as v1 and v2, deployed as `mlship deploy` does."""
    from mlship.data.synth import write_synthetic
    from mlship.deploy.factory import controller
    from mlship.model.train import train
    from mlship.registry import Registry
    from mlship.settings import load_settings

    suite = REPO / "data" / "expectations" / "transactions.json"
    (root / "data" / "expectations").mkdir(parents=True)
    (root / "data" / "expectations" / "transactions.json").write_text(suite.read_text())
    data = root / "data" / "transactions.parquet"
    write_synthetic(data, rows=5000, seed=42)
    settings = load_settings(cwd=root)
    run = train(settings, data)
    registry = Registry.from_settings(settings)
    for _ in range(3):
        registry.register(run.run_id, settings.model_name, alias="challenger")
    ctl = controller(settings, "local", "staging")

    def release(version: str) -> Any:
        return ctl.resolve(f"models:/{settings.model_name}/{version}")

    return ctl, release


def crash_run(ctl: Any, release: Any, root: Path, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """Kill a deploy of v3 mid-verification (SIGKILL), then deploy v3 again; count failures throughout."""
    import os

    from mlship.deploy.faults import FAULT_VAR

    if args.server == "fake":
        argv = [
            sys.executable,
            str(REPO / "tests" / "support" / "deploy_doubles" / "deploy_once.py"),
            str(root),
            str(port),
            "3",
            "3",
        ]
    else:
        argv = [MLSHIP, "deploy", "--model", release("3").ref]
    stop = mp.Event()
    queue: Any = mp.Queue()
    gen = mp.Process(target=load_process, args=(port, args.connections, args.rate, stop, queue))
    gen.start()
    try:
        time.sleep(2.0)
        killed = subprocess.run(
            argv, check=False, cwd=root, env={**os.environ, FAULT_VAR: "mid-verification"}, capture_output=True
        )
        served_after_kill = ctl.target.weights()
        time.sleep(2.0)  # traffic keeps flowing to the unverified color the dead deploy left live
        t0 = time.time()
        recovered = ctl.deploy(release("3"))
        recovery_s = time.time() - t0
        time.sleep(2.0)
    finally:
        stop.set()
    load = queue.get(timeout=60)
    gen.join(timeout=30)
    history = ctl.store.load().history
    return {
        "killed_at": "mid-verification",
        "kill_returncode": killed.returncode,
        "route_left_by_the_killed_deploy": served_after_kill,
        "interrupted_release_outcome": next((r.outcome for r in reversed(history) if "died" in r.detail), None),
        "recovery_deploy_s": round(recovery_s, 3),
        "recovered_live": recovered.live,
        "requests": load["ok"] + load["failed"],
        "failed_requests": load["failed"],
        "failures_by_kind": load["statuses"],
        "responses_by_version": load["versions"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--min-requests", type=int, default=12_000)
    parser.add_argument("--rate", type=float, default=None, help="Total requests/s (0: as fast as possible).")
    parser.add_argument("--server", choices=["fake", "mlship"], default="fake")
    args = parser.parse_args()
    if args.rate is None:
        args.rate = 1000.0 if args.server == "fake" else 400.0

    from mlship.deploy.targets.local import free_port

    with tempfile.TemporaryDirectory(prefix="mlship-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        (root / "pyproject.toml").write_text(
            f"[tool.mlship.deploy]\nport = {port}\nverify_window_s = 3.0\nready_timeout_s = 120.0\n"
        )
        ctl, release = fake_controller(root) if args.server == "fake" else mlship_controller(root)
        target = ctl.target
        stop = mp.Event()
        queue: Any = mp.Queue()
        try:
            ctl.deploy(release("1"))
            blue_port = int(target.preview_url("blue").rsplit(":", 1)[1])
            direct_rps = saturate(blue_port, args.connections, 4.0)
            routed_rps = saturate(port, args.connections, 4.0)
            baseline = sum(s.requests for s in (target.signal("blue"), target.signal("green")) if s is not None)
            gen = mp.Process(target=load_process, args=(port, args.connections, args.rate, stop, queue))
            gen.start()
            time.sleep(2.0)
            t_deploy = time.time()
            deployed = ctl.deploy(release("2"))
            deploy_s = time.time() - t_deploy
            time.sleep(1.0)
            t_rb = time.time()
            rolled = ctl.rollback()
            rollback_call_s = time.time() - t_rb
            time.sleep(1.0)
            forward = ctl.rollback()  # back to v2: the previous color is still warm
            time.sleep(1.0)
            t_cli = time.time()
            cli = subprocess.run([MLSHIP, "rollback"], check=False, cwd=root, capture_output=True, text=True)
            cli_s = time.time() - t_cli
            if cli.returncode != 0:
                raise SystemExit(f"mlship rollback failed: {cli.stderr.strip()}")
            # keep the load on until enough requests went through
            deadline = time.time() + 300
            while time.time() < deadline:
                state = target.signal("blue"), target.signal("green")
                total = sum(s.requests for s in state if s is not None) - baseline
                if total >= args.min_requests:
                    break
                time.sleep(0.5)
            stop.set()
            load = queue.get(timeout=60)
            gen.join(timeout=30)
            crash = crash_run(ctl, release, root, port, args)
        finally:
            stop.set()
            ctl.down()
    changes = [(t, v) for t, v in load.pop("changes")]
    result = {
        "server": args.server,
        "connections": args.connections,
        "offered_rate_rps": args.rate,
        "requests": load["ok"] + load["failed"],
        "failed_requests": load["failed"],
        "failures_by_kind": load["statuses"],
        "throughput_rps": round((load["ok"] + load["failed"]) / load["elapsed_s"], 1),
        "responses_by_version": load["versions"],
        "deploy_total_s": round(deploy_s, 3),
        "deploy_timings_s": deployed.timings_s,
        "switch_s": deployed.timings_s["switch"],
        "traffic_on_v2_after_s": first_after(changes, t_deploy, "2"),
        "rollback_switch_s": rolled.timings_s["switch"],
        "rollback_call_s": round(rollback_call_s, 4),
        "traffic_back_on_v1_after_s": first_after(changes, t_rb, "1"),
        "roll_forward_switch_s": forward.timings_s["switch"],
        "cli_rollback_wall_s": round(cli_s, 3),
        "saturated_rps_direct_to_color": direct_rps,
        "saturated_rps_through_router": routed_rps,
        "crash_run": crash,
        "targets": {"failed_requests": 0, "min_requests": 10_000, "rollback_s": 1.0},
    }
    result["traffic_on_v2_after_s"] = result["traffic_on_v2_after_s"] and round(result["traffic_on_v2_after_s"], 3)
    result["traffic_back_on_v1_after_s"] = result["traffic_back_on_v1_after_s"] and round(
        result["traffic_back_on_v1_after_s"], 4
    )
    save("bluegreen", result)
    ok = load["failed"] == 0 and result["requests"] >= 10_000 and crash["failed_requests"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
