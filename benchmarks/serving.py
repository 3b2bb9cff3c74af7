"""Serving throughput under wrk: `mlship serve`, a constant-answer endpoint on the same stack, and MLflow.

    uv run python benchmarks/serving.py [--passes 3] [--duration 5] [--connections 16] [--model DIR]
    uv run python benchmarks/serving.py --readme     # only regenerate benchmarks/README.md from the last JSON

The load generator is `wrk` (nobody here wrote it; Debian/Ubuntu package `wrk`: `apt-get install
wrk`). This script installs nothing: without `wrk` on PATH it says so and exits 2.

One trained model (the synthetic card-fraud data, the default gradient-boosting pipeline) is
exported to a model directory. Three servers run side by side on loopback:
  mlship     `mlship serve` on that directory (defaults: micro-batching, prediction log sampled);
  constant   the same stack (FastAPI under uvicorn, the same uvicorn settings as `mlship serve`)
             answering every request with fixed bytes after reading its body: the ceiling;
  mlflow     `mlflow models serve --env-manager local` on the same directory.
Bodies: 1-, 32- and 256-record JSON (`dataframe_records`, which all three accept) and a
4,096-row V2 request in the binary tensor data extension (mlship and constant only: MLflow's
scoring server has no V2 endpoint), outputs asked for as binary, as tritonclient does.
Before any load, mlship and MLflow must give the same labels for the same 32 records, and
mlship's binary V2 answer must equal its /predict answer on the same 4,096 rows.

Each pass runs wrk (`-t<threads> -c<connections> -d<duration>`, after a 1 s warm-up in the
first pass) once per (body, server), alternating the servers' order between passes so that a
burst of load from the machine's other users lands on all of them alike. The figures are
medians over the passes. Targets are ratios to the constant endpoint's 1-record req/s of the
same run (absolute figures move with the machine): 32-record ≥ 8 rows per constant req/s at
p99 ≤ 25 ms; 1-record ≥ 60% of the constant's req/s; 4,096-row V2 binary ≥ 40 rows per
constant req/s. Also recorded: the load average before and after, and an in-process profile
of a 32-record request (parse, features, trees, response encoding). Results:
benchmarks/results/serving.json; benchmarks/README.md is regenerated from it (benchmarks/readme.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response  # module level: the endpoints' annotations resolve here

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL_NAME = "card-fraud"
FEATURES = ["merchant_category", "country", "device_type", "amount", "hour", "account_age_days", "num_tx_24h"]
JSON_SIZES = (1, 32, 256)
V2_ROWS = 4096
TARGETS = {"rows_per_constant_rps_32": 8.0, "p99_ms_32": 25.0, "ratio_1_record": 0.60, "rows_per_constant_rps_v2": 40.0}


# Servers ------------------------------------------------------------------------------------


def constant_server(port: int) -> None:
    """The ceiling: the same ASGI stack as `mlship serve`, answering fixed bytes after reading the body."""
    import uvicorn

    app = FastAPI()
    answer = b'{"predictions":[0],"probabilities":[0.5],"model":{"name":"card-fraud","version":"1"}}'

    @app.get("/ready")
    async def ready() -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    @app.post("/v2/models/{name}/infer")
    async def infer(request: Request, name: str) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    # the uvicorn settings of mlship.serving.server.serve
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        backlog=2048,
    )
    uvicorn.Server(config).run()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {timeout_s:g} s")


def _start(kind: str, model_dir: Path, port: int, work: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    if kind == "mlship":
        argv = [str(BIN / "mlship"), "serve", "--model", str(model_dir), "--port", str(port)]
        argv += ["--prediction-log", str(work / "predictions.jsonl")]
        ready = f"http://127.0.0.1:{port}/ready"
    elif kind == "constant":
        argv = [sys.executable, str(Path(__file__).resolve()), "--constant-server", str(port)]
        ready = f"http://127.0.0.1:{port}/ready"
    else:
        argv = [str(BIN / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager", "local"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        ready = f"http://127.0.0.1:{port}/ping"
    log = (work / f"{kind}.log").open("ab")
    proc = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_http(ready, proc, 180.0)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    import contextlib
    import signal

    # each server runs in its own session: signal its whole group (MLflow's workers too)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# Bodies -------------------------------------------------------------------------------------


def _rows(data: Path, n: int) -> list[dict[str, Any]]:
    """The first `n` complete rows of the synthetic data, as JSON values."""
    import pandas as pd

    frame = pd.read_parquet(data, columns=FEATURES).dropna()
    if len(frame) < n:
        raise SystemExit(f"{data} has {len(frame)} complete rows; {n} are needed")
    rows: list[dict[str, Any]] = json.loads(frame.head(n).to_json(orient="records"))
    return rows


def v2_binary_body(rows: list[dict[str, Any]], metadata: dict[str, Any]) -> tuple[bytes, int]:
    """A V2 request in the binary tensor data extension: (body, JSON header length)."""
    import struct

    import numpy as np

    inputs, chunks = [], []
    for spec in metadata["inputs"]:
        values = [row[spec["name"]] for row in rows]
        if spec["datatype"] == "BYTES":
            chunk = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in map(str, values))
        else:
            dtype = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}[spec["datatype"]]
            chunk = np.asarray(values).astype(dtype).tobytes()
        chunks.append(chunk)
        inputs.append(
            {
                "name": spec["name"],
                "shape": [len(rows)],
                "datatype": spec["datatype"],
                "parameters": {"binary_data_size": len(chunk)},
            }
        )
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(chunks), len(header)


def _check_answers(ports: dict[str, int], bodies: dict[str, dict[str, Any]]) -> None:
    """mlship and MLflow agree on 32 records; mlship's binary V2 answer equals its /predict one."""
    import httpx
    import numpy as np

    json32 = bodies["json32"]["body"]
    answers = {}
    for kind in ("mlship", "mlflow"):
        if kind not in ports:
            continue
        path = "/invocations" if kind == "mlflow" else "/predict"
        r = httpx.post(f"http://127.0.0.1:{ports[kind]}{path}", content=json32, timeout=60.0, headers=_JSON)
        if r.status_code != 200:
            raise SystemExit(f"{kind} answered {r.status_code}: {r.text[:200]}")
        answers[kind] = [int(p) for p in r.json()["predictions"]]
    if len({tuple(a) for a in answers.values()}) > 1:
        raise SystemExit(f"the servers disagree on the same 32 records: {answers}")
    if "mlship" in ports:
        v2 = bodies["v2bin4096"]
        base = f"http://127.0.0.1:{ports['mlship']}"
        r = httpx.post(base + v2["path"].replace("{name}", MODEL_NAME), content=v2["body"], headers=v2["headers"])
        if r.status_code != 200:
            raise SystemExit(f"mlship answered the binary V2 request with {r.status_code}: {r.text[:200]}")
        length = int(r.headers["inference-header-content-length"])
        sizes = [o["parameters"]["binary_data_size"] for o in json.loads(r.content[:length])["outputs"]]
        labels = np.frombuffer(r.content[length : length + sizes[0]], dtype="<i8").tolist()
        plain = httpx.post(base + "/predict", content=v2["records"], headers=_JSON, timeout=60.0).json()
        if labels != plain["predictions"]:
            raise SystemExit("mlship's binary V2 labels differ from its /predict labels on the same rows")


_JSON = {"content-type": "application/json"}


# wrk ----------------------------------------------------------------------------------------

_LUA = """
local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
done = function(summary, latency, requests)
  io.write(string.format(
    "WRK-JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d,"
      .. "\\"max_us\\":%d,\\"non2xx\\":%d,\\"connect_errors\\":%d,\\"read_errors\\":%d,\\"write_errors\\":%d,"
      .. "\\"timeouts\\":%d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout))
end
"""


def _script(work: Path, name: str, body: bytes, headers: dict[str, str]) -> Path:
    body_file = work / f"{name}.body"
    body_file.write_bytes(body)
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = work / f"{name}.lua"
    script.write_text(_LUA.format(body=body_file, headers=lines))
    return script


def run_wrk(url: str, script: Path, args: argparse.Namespace, duration: float) -> dict[str, Any]:
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s", "--timeout", "10s"]
    command = [*argv, "-s", str(script), url]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK-JSON ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    raw = json.loads(line.removeprefix("WRK-JSON "))
    seconds = raw["duration_us"] / 1e6
    failed = raw["non2xx"] + raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    return {
        "requests": raw["requests"],
        "failed": failed,
        "seconds": round(seconds, 2),
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


# Profile ------------------------------------------------------------------------------------


def profile_32(model_dir: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a 32-record request's time goes inside the server, in-process (one native thread),
    best of several repeats: parse and validate, feature matrix, trees, response encoding."""
    import orjson
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    from mlship.serving.model import load, resolve_source
    from mlship.serving.schema import build_schema
    from mlship.settings import Settings

    threadpool_limits(1)
    settings = Settings()
    model = load(resolve_source(str(model_dir), settings), settings)
    schema = build_schema(model.columns)
    body = json.dumps({"dataframe_records": rows[:32]}).encode()
    columns = schema.parse_columns(body)
    compiled = model.compiled
    if compiled is None:
        return {"note": model.compile_note}
    features = compiled.transform(columns)
    labels, probabilities = model.predict_columns(columns)
    answer = {"predictions": labels, "probabilities": probabilities, "model": {"name": "m", "version": "1"}}

    def best_us(fn: Any, repeat: int = 7, number: int = 200) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times.append((time.perf_counter() - start) / number)
        return round(min(times) * 1e6, 1)

    return {
        "parse_and_validate_us": best_us(lambda: schema.parse_columns(body)),
        "features_us": best_us(lambda: compiled.transform(columns)),
        "trees_us": best_us(lambda: compiled.final.predict_proba(features)),
        "predict_total_us": best_us(lambda: model.predict_columns(columns)),
        "response_encoding_us": best_us(lambda: orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)),
        "pipeline_predict_proba_us": best_us(lambda: model.estimator.predict_proba(model.frame(columns)), 3, 20),
    }


# Summary and README -------------------------------------------------------------------------


def summarise(points: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians over the passes per (server, body), and the targets as ratios to the constant endpoint."""
    medians: dict[str, dict[str, Any]] = {}
    for kind, per_body in points.items():
        medians[kind] = {}
        for body, runs in per_body.items():
            medians[kind][body] = {
                "rps": round(statistics.median(r["rps"] for r in runs), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
                "failed": sum(r["failed"] for r in runs),
                "passes": len(runs),
            }
    summary: dict[str, Any] = {"medians": medians, "targets": TARGETS}
    constant = medians.get("constant", {}).get("json1", {}).get("rps")
    mine = medians.get("mlship", {})
    if constant and mine:
        summary["constant_1_record_rps"] = constant
        ratio_1 = mine["json1"]["rps"] / constant
        rows_32 = mine["json32"]["rps"] * 32 / constant
        rows_v2 = mine["v2bin4096"]["rps"] * V2_ROWS / constant if "v2bin4096" in mine else None
        summary["ratio_1_record"] = round(ratio_1, 3)
        summary["rows_per_constant_rps_32"] = round(rows_32, 2)
        summary["rows_per_constant_rps_256"] = round(mine["json256"]["rps"] * 256 / constant, 2)
        summary["rows_per_constant_rps_v2"] = None if rows_v2 is None else round(rows_v2, 2)
        summary["rows_per_s"] = {
            "json1": mine["json1"]["rps"],
            "json32": round(mine["json32"]["rps"] * 32),
            "json256": round(mine["json256"]["rps"] * 256),
            "v2bin4096": round(mine["v2bin4096"]["rps"] * V2_ROWS) if "v2bin4096" in mine else None,
        }
        summary["meets"] = {
            "ratio_1_record": ratio_1 >= TARGETS["ratio_1_record"],
            "rows_per_constant_rps_32": rows_32 >= TARGETS["rows_per_constant_rps_32"]
            and mine["json32"]["p99_ms"] <= TARGETS["p99_ms_32"],
            "rows_per_constant_rps_v2": rows_v2 is not None and rows_v2 >= TARGETS["rows_per_constant_rps_v2"],
        }
    if mine and medians.get("mlflow", {}).get("json1", {}).get("rps"):
        summary["mlship_vs_mlflow_1_record"] = round(mine["json1"]["rps"] / medians["mlflow"]["json1"]["rps"], 1)
    return summary


def update_readme() -> None:
    """Regenerate benchmarks/README.md, whose serving table comes from results/serving.json."""
    import readme  # benchmarks/readme.py, beside this script (on sys.path above)

    if readme.main([]) != 0:
        raise SystemExit("benchmarks/README.md could not be regenerated (see the line above)")


# Main ---------------------------------------------------------------------------------------


def _train_model(work: Path) -> tuple[Path, Path]:
    mlship = str(BIN / "mlship")
    data = work / "transactions.parquet"
    subprocess.run([mlship, "data", "synth", "--out", str(data), "--rows", "20000"], cwd=work, check=True)
    subprocess.run([mlship, "train", "--data", str(data), "--out", str(work / "train")], cwd=work, check=True)
    return work / "train" / "model", data


def main() -> int:
    import tempfile

    from _common import save

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--passes", type=int, default=3, help="Passes over every (body, server) pair.")
    parser.add_argument("--duration", type=float, default=5.0, help="Seconds of each wrk run.")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c: keep-alive connections.")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t: generator threads.")
    parser.add_argument("--servers", default="mlship,constant,mlflow", help="Which servers, comma-separated.")
    parser.add_argument("--model", type=Path, help="An MLflow model directory (default: train one now).")
    parser.add_argument("--data", type=Path, help="With --model: the parquet to take request rows from.")
    parser.add_argument("--readme", action="store_true", help="Only regenerate benchmarks/README.md from the JSON.")
    parser.add_argument("--constant-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.constant_server:
        constant_server(args.constant_server)
        return 0
    if args.readme:
        update_readme()
        return 0
    if shutil.which("wrk") is None:
        print("serving.py: wrk is not on PATH: install it (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mlship-bench-serving-") as tmp:
        work = Path(tmp)
        if args.model:
            model_dir, data = args.model.resolve(), (args.data or REPO / "data" / "transactions.parquet").resolve()
        else:
            model_dir, data = _train_model(work)
        rows = _rows(data, V2_ROWS)
        ports = {kind: _free_port() for kind in kinds}
        procs: dict[str, subprocess.Popen[bytes]] = {}
        points: dict[str, dict[str, list[dict[str, Any]]]] = {kind: {} for kind in kinds}
        try:
            for kind in kinds:
                procs[kind] = _start(kind, model_dir, ports[kind], work)
            bodies = _bodies(rows, ports, work)
            _check_answers(ports, bodies)
            for n in range(args.passes):
                for name, spec in bodies.items():
                    order = kinds if n % 2 == 0 else kinds[::-1]
                    for kind in order:
                        if kind == "mlflow" and name == "v2bin4096":
                            continue  # MLflow's scoring server has no V2 endpoint
                        path = "/invocations" if kind == "mlflow" else spec["path"].replace("{name}", MODEL_NAME)
                        url = f"http://127.0.0.1:{ports[kind]}{path}"
                        if n == 0:
                            run_wrk(url, spec["script"], args, 1.0)  # warm-up, not recorded
                        point = run_wrk(url, spec["script"], args, args.duration)
                        points[kind].setdefault(name, []).append(point)
                        print(f"pass {n + 1} {name:10} {kind:8} {point}", flush=True)
        finally:
            for proc in procs.values():
                _stop(proc)
        profile = profile_32(model_dir, rows)
    result: dict[str, Any] = {
        "command": "uv run python benchmarks/serving.py " + " ".join(sys.argv[1:]),
        "model": "default gradient-boosting pipeline, 20,000 synthetic rows (mlship train --out)",
        "wrk": {"threads": args.threads, "connections": args.connections, "duration_s": args.duration},
        "passes": args.passes,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "points": points,
        "profile_32_records": profile,
    }
    result["summary"] = summarise(points)
    save("serving", result)
    update_readme()
    return 0


def _bodies(rows: list[dict[str, Any]], ports: dict[str, int], work: Path) -> dict[str, dict[str, Any]]:
    import httpx

    bodies: dict[str, dict[str, Any]] = {}
    for n in JSON_SIZES:
        body = json.dumps({"dataframe_records": rows[:n]}).encode()
        bodies[f"json{n}"] = {"body": body, "path": "/predict", "script": _script(work, f"json{n}", body, _JSON)}
    if "mlship" in ports:
        metadata = httpx.get(f"http://127.0.0.1:{ports['mlship']}/v2/models/{MODEL_NAME}", timeout=10.0).json()
        body, header = v2_binary_body(rows[:V2_ROWS], metadata)
        headers = {"Inference-Header-Content-Length": str(header), "content-type": "application/octet-stream"}
        bodies["v2bin4096"] = {
            "body": body,
            "headers": headers,
            "path": "/v2/models/{name}/infer",
            "script": _script(work, "v2bin4096", body, headers),
            "records": json.dumps({"dataframe_records": rows[:V2_ROWS]}).encode(),
        }
    return bodies


if __name__ == "__main__":
    sys.exit(main())
