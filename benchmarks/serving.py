"""Serving throughput and latency: `mlship serve` vs `mlflow models serve`, same model, same load.

    uv run python benchmarks/serving.py [--duration 5] [--connections 1,4,16,64] [--rate 500] [--model DIR]

One trained model (the synthetic card-fraud data, the default gradient-boosting pipeline)
is exported to a model directory; both servers load that directory. The load generator is
a separate process running raw asyncio (uvloop) HTTP/1.1 keep-alive clients that post
pre-encoded one-record bodies, so it spends microseconds per request and is not the
bottleneck (its own ceiling is measured first against a static endpoint). Two loads:
  closed loop  N connections, each sending its next request as soon as the answer arrives
               (throughput and latency at that concurrency);
  open loop    a fixed rate (default 500 requests/s) whatever the server's speed, so a slow
               server cannot hide its queueing (latency measured from the scheduled send time).
A failed request is a connection error or any non-200 answer. Loopback only, bounded load
(open-loop requests still unsent DRAIN_S after the end are reported as unsent). Each point
also records the server's CPU time per request (its whole process tree, so MLflow's workers
count): on a machine shared with other work that figure moves much less than wall-clock ones.
Before the load, both servers must return the same predictions for the same body.
Results go to benchmarks/results/serving.json.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
RECORDS = [
    {
        "merchant_category": "grocery",
        "country": "US",
        "device_type": "mobile",
        "amount": 12.5,
        "hour": 9,
        "account_age_days": 400,
        "num_tx_24h": 2,
    },
    {
        "merchant_category": "online_gaming",
        "country": "BR",
        "device_type": "desktop",
        "amount": 950.0,
        "hour": 3,
        "account_age_days": 12,
        "num_tx_24h": 9,
    },
]


# Load generator (runs in its own process) ------------------------------------------------------


DRAIN_S = 5.0
"""Open loop: requests still unsent this long after the run's end are counted as unsent, not sent late."""


def _request(port: int, path: str, body: bytes | None) -> bytes:
    if body is None:
        return f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _connection(
    port: int, requests: list[bytes], deadline: float, lat: list[float], fails: list[int], schedule: Any
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while True:
            planned = schedule() if schedule else time.perf_counter()
            if planned is None or planned >= deadline or time.perf_counter() > deadline + DRAIN_S:
                return
            now = time.perf_counter()
            if planned > now:
                await asyncio.sleep(planned - now)
            writer.write(requests[i % len(requests)])
            i += 1
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                fails[0] += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            lat.append(time.perf_counter() - planned)
            if status != 200:
                fails[0] += 1
    finally:
        writer.close()


async def _load(
    port: int, path: str, bodies: list[bytes | None], connections: int, duration: float, rate: float
) -> dict[str, Any]:
    requests = [_request(port, path, b) for b in bodies]
    warm_until = time.perf_counter() + min(1.0, duration / 4)
    lat: list[float] = []
    fails = [0]
    # warm-up (not counted in the latencies; counted for the server's CPU per request)
    warm: list[float] = []
    warm_fails = [0]
    await asyncio.gather(*(_connection(port, requests, warm_until, warm, warm_fails, None) for _ in range(connections)))
    start = time.perf_counter()
    deadline = start + duration
    schedule = None
    if rate > 0:  # open loop: one shared clock hands out send times at a fixed rate
        counter = iter(range(10**9))
        interval = 1.0 / rate

        def schedule() -> float:
            return start + next(counter) * interval

    await asyncio.gather(*(_connection(port, requests, deadline, lat, fails, schedule) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    lat.sort()
    n = len(lat)

    def pct(q: float) -> float:
        return round(lat[min(n - 1, int(q * n))] * 1000, 2) if n else float("nan")

    unsent = max(0, int(rate * duration) - n - fails[0]) if rate > 0 else 0
    return {
        "connections": connections,
        "target_rate": rate or None,
        "requests": n,
        "unsent": unsent,
        "failed": fails[0],
        "seconds": round(elapsed, 2),
        "throughput_rps": round(n / elapsed, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1] * 1000, 2) if n else None,
        "warmup_requests": len(warm) + warm_fails[0],
    }


def _load_process(args: tuple[int, str, list[bytes | None], int, float, float], out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.put(asyncio.run(_load(*args)))


def run_load(
    port: int,
    path: str,
    bodies: list[bytes | None],
    connections: int,
    duration: float,
    rate: float = 0.0,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """One load point from a separate generator process; with `server_pid`, also the server's CPU per request."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load_process, args=((port, path, bodies, connections, duration, rate), queue))
    cpu_before = tree_cpu_s(server_pid) if server_pid else 0.0
    proc.start()
    result: dict[str, Any] = queue.get(timeout=duration + 120)
    proc.join()
    if server_pid:
        served = result["requests"] + result["failed"] + result["warmup_requests"]
        cpu = tree_cpu_s(server_pid) - cpu_before
        result["server_cpu_ms_per_request"] = round(cpu * 1000 / served, 3) if served else None
    return result


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and every process below it (workers).

    On a machine shared with other work, wall-clock figures depend on the neighbours;
    CPU time per request does much less, so it is recorded next to them.
    """
    import os

    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for p, used in cpu.items():
        q = p
        while q and q != pid:
            q = parents.get(q, 0)
        if q == pid:
            total += used
    return total


# Static endpoint: the load generator's own ceiling -------------------------------------------

STATIC_BODY = b'{"predictions":[0]}'
STATIC_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(STATIC_BODY)).encode()
    + b"\r\n\r\n"
    + STATIC_BODY
)


async def _static_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request on the connection with the same bytes, doing no work at all."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            writer.write(STATIC_RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _static_process(port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        server = await asyncio.start_server(_static_handler, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# Servers -----------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: Any, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {timeout_s:g} s")


def _stop(proc: Any) -> None:
    import contextlib
    import os
    import signal
    import subprocess

    # the server runs in its own session: signal the whole group (MLflow's uvicorn workers too)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _start_server(kind: str, model_dir: Path, port: int, work: Path) -> Any:
    """`mlship serve` or `mlflow models serve --env-manager local` on the same model directory."""
    import os
    import subprocess

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    if kind == "mlship":
        argv = [str(BIN / "mlship"), "serve", "--model", str(model_dir), "--port", str(port)]
        argv += ["--prediction-log", str(work / "predictions.jsonl")]
        ready = f"http://127.0.0.1:{port}/ready"
    else:
        argv = [str(BIN / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager", "local"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        ready = f"http://127.0.0.1:{port}/ping"
    log = (work / f"{kind}.log").open("ab")
    proc = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_http(ready, proc, 180.0)
    return proc


def _check_same_answers(ports: dict[str, int], body: bytes) -> list[Any]:
    """Both servers must return the same predictions for the same body (same model, same load)."""
    import httpx

    answers = {}
    for kind, port in ports.items():
        response = httpx.post(
            f"http://127.0.0.1:{port}/invocations" if kind == "mlflow" else f"http://127.0.0.1:{port}/predict",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30.0,
        )
        if response.status_code != 200:
            raise SystemExit(f"{kind} answered {response.status_code}: {response.text[:200]}")
        answers[kind] = [int(p) for p in response.json()["predictions"]]
    if len({tuple(a) for a in answers.values()}) != 1:
        raise SystemExit(f"the servers disagree on the same input: {answers}")
    return next(iter(answers.values()))


def _train_model(work: Path) -> Path:
    """The default pipeline trained by mlship on synthetic card-fraud data, exported as a model directory."""
    import subprocess

    mlship = str(BIN / "mlship")
    data = work / "transactions.parquet"
    subprocess.run([mlship, "data", "synth", "--out", str(data), "--rows", "20000"], cwd=work, check=True)
    subprocess.run([mlship, "train", "--data", str(data), "--out", str(work / "train")], cwd=work, check=True)
    return work / "train" / "model"


def _measure(kind: str, pid: int, port: int, path: str, body: bytes, levels: list[int], args: Any) -> dict[str, Any]:
    closed = []
    for n in levels:
        point = run_load(port, path, [body], n, args.duration, server_pid=pid)
        print(f"{kind:7} closed {n:>3} conn: {point}", flush=True)
        closed.append(point)
    opened = run_load(port, path, [body], args.open_connections, args.rate_duration, args.rate, server_pid=pid)
    print(f"{kind:7} open {args.rate:g}/s: {opened}", flush=True)
    return {"closed_loop": closed, "open_loop": opened}


def main() -> int:
    import argparse
    import json
    import os
    import tempfile

    from _common import save

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="Seconds per closed-loop point (after a warm-up).")
    parser.add_argument("--connections", default="1,4,16,64", help="Closed-loop concurrency levels, comma-separated.")
    parser.add_argument("--rate", type=float, default=500.0, help="Open-loop offered rate, requests/s.")
    parser.add_argument("--rate-duration", type=float, default=10.0, help="Seconds of the open-loop run.")
    parser.add_argument("--open-connections", type=int, default=64, help="Connections the open loop may use.")
    parser.add_argument("--model", type=Path, help="An MLflow model directory (default: train one now).")
    parser.add_argument("--servers", default="mlship,mlflow", help="Which servers to measure, comma-separated.")
    args = parser.parse_args()
    levels = [int(c) for c in args.connections.split(",")]
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    load_before = os.getloadavg()

    body = json.dumps({"dataframe_records": RECORDS[:1]}).encode()  # both servers accept MLflow's format
    with tempfile.TemporaryDirectory(prefix="mlship-bench-serving-") as tmp:
        work = Path(tmp)
        model_dir = args.model.resolve() if args.model else _train_model(work)

        # 1. the generator's ceiling against a server that does nothing
        static_port = _free_port()
        static = mp.get_context("spawn").Process(target=_static_process, args=(static_port,), daemon=True)
        static.start()
        try:
            _wait_tcp(static_port)
            ceiling = run_load(static_port, "/predict", [body], max(levels), args.duration)
        finally:
            static.terminate()
            static.join(timeout=5)
        print(f"load generator ceiling: {ceiling}", flush=True)

        # 2. both servers up on the same model directory; same answers for the same body
        ports = {kind: _free_port() for kind in kinds}
        procs: dict[str, Any] = {}
        results: dict[str, Any] = {}
        try:
            for kind in kinds:
                procs[kind] = _start_server(kind, model_dir, ports[kind], work)
            _check_same_answers(ports, body)
            # 3. one server at a time under load (the other idle), same bodies, same levels
            for kind in kinds:
                path = "/invocations" if kind == "mlflow" else "/predict"
                results[kind] = _measure(kind, procs[kind].pid, ports[kind], path, body, levels, args)
        finally:
            for proc in procs.values():
                _stop(proc)

    result: dict[str, Any] = {
        "command": "uv run python benchmarks/serving.py " + " ".join(sys.argv[1:]),
        "model": "default gradient-boosting pipeline, 20,000 synthetic rows (mlship train --out)",
        "request": "one record as MLflow dataframe_records (byte-identical body for both servers)",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "load_generator_ceiling": ceiling,
        "servers": results,
    }
    result["summary"] = summarise(results, ceiling, args.rate)
    save("serving", result)
    return 0


def summarise(results: dict[str, Any], ceiling: dict[str, Any], rate: float) -> dict[str, Any]:
    """The issue's targets, computed from the measured points."""
    summary: dict[str, Any] = {"targets": {"throughput_ratio_vs_mlflow": 5.0, "p99_ms": 25.0, "open_loop_rps": rate}}
    fastest = max((p["throughput_rps"] for r in results.values() for p in r["closed_loop"]), default=0.0)
    summary["generator_headroom"] = round(ceiling["throughput_rps"] / fastest, 1) if fastest else None
    if "mlflow" in results:
        summary["mlflow_best_rps"] = max(p["throughput_rps"] for p in results["mlflow"]["closed_loop"])
    if "mlship" in results:
        fast = [p for p in results["mlship"]["closed_loop"] if p["failed"] == 0 and p["p99_ms"] < 25.0]
        summary["mlship_best_rps_at_p99_under_25ms"] = max((p["throughput_rps"] for p in fast), default=0.0)
        summary["mlship_best_rps_any_p99"] = max(p["throughput_rps"] for p in results["mlship"]["closed_loop"])
        opened = results["mlship"]["open_loop"]
        summary["mlship_open_loop_p99_ms"] = opened["p99_ms"]
        summary["mlship_open_loop_failed"] = opened["failed"]
        summary["mlship_open_loop_unsent"] = opened["unsent"]
        summary["meets_open_loop_target"] = opened["failed"] == 0 and opened["unsent"] == 0 and opened["p99_ms"] < 25.0
    for kind, r in results.items():
        cpu = [p["server_cpu_ms_per_request"] for p in r["closed_loop"] if p.get("server_cpu_ms_per_request")]
        summary[f"{kind}_min_cpu_ms_per_request"] = min(cpu, default=None)
    if "mlflow" in results and "mlship" in results and summary["mlflow_best_rps"]:
        ratio = summary["mlship_best_rps_at_p99_under_25ms"] / summary["mlflow_best_rps"]
        summary["throughput_ratio_vs_mlflow"] = round(ratio, 2)
        summary["throughput_ratio_vs_mlflow_any_p99"] = round(
            summary["mlship_best_rps_any_p99"] / summary["mlflow_best_rps"], 2
        )
        summary["meets_throughput_target"] = ratio >= 5.0
    return summary


def _wait_tcp(port: int, timeout_s: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


if __name__ == "__main__":
    sys.exit(main())
