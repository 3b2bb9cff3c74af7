"""The model server as an ASGI app: `create_app(model, ...)` works in-process and under uvicorn.

Imported only when a server is built (the `serve` command imports it inside its body).

Endpoints: `GET /health` (liveness: 200 while the process is up), `GET /ready` (200 once the
model is loaded and has answered a warm-up prediction, else 503), `POST /predict`,
`GET /metrics` (Prometheus text), `GET /version`. A model given as a reference or a
`ModelSource` is loaded in the background after startup, so liveness answers at once and
readiness tells the truth; a loaded `ServedModel` is only warmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import IO, Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect

from mlship import provenance
from mlship.redaction import redact
from mlship.serving import mirror, v2
from mlship.serving.batching import BatcherClosed, MicroBatcher
from mlship.serving.body import CLIENT_CLOSED, KEY_HASH_HEADER, SYNTHETIC_HEADER, BodyTooLarge, read_body
from mlship.serving.columns import Columns
from mlship.serving.logs import AccessLog, PredictionLog
from mlship.serving.metrics import ServingMetrics
from mlship.serving.model import ModelSource, ServedModel, load, resolve_source, warmup_rows
from mlship.serving.schema import InvalidRequest, build_schema
from mlship.serving.state import ServerState
from mlship.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INLINE_BELOW_S = 0.001
"""A batch of a few dozen rows whose last model call took under 1 ms runs on the event loop (see
`MicroBatcher`): the compiled model answers 1 to 32 rows in about 0.1 ms, less than the thread
hand-off costs, and a slower model (the uncompiled pipeline: milliseconds) keeps its thread."""


def create_app(
    model: ServedModel | ModelSource | str | os.PathLike[str],
    *,
    settings: Settings | None = None,
    color: str | None = None,
    git_sha: str | None = None,
    prediction_log: Path | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
    log_stream: IO[str] | None = None,
) -> FastAPI:
    """Build the server for `model`: a loaded model, a pinned source, or any model reference.

    A reference is resolved now (ModelNotFound for an unknown one); loading happens after
    startup. `on_fatal` is called when the model cannot be loaded or warmed (the command
    uses it to stop the server with exit 3). `prediction_log` defaults to
    `<state>/predictions/<color>.jsonl`; the sample rate is `serve.prediction_log_sample`.
    """
    settings = settings or Settings()
    color = color or os.environ.get("MLSHIP_COLOR") or "default"
    loaded = model if isinstance(model, ServedModel) else None
    source = None
    if not isinstance(model, ServedModel):
        source = model if isinstance(model, ModelSource) else resolve_source(os.fspath(model), settings)
    version = loaded.version if loaded else source.version if source else "unknown"
    state = ServerState(
        settings=settings,
        source=source,
        color=color,
        git_sha=git_sha or provenance.git_sha(),
        metrics=ServingMetrics(),
        access=AccessLog(color=color, model_version=version, stream=log_stream),
        prediction_log_path=prediction_log or settings.state_path / "predictions" / f"{color}.jsonl",
        model=loaded,
        schema=build_schema(loaded.columns) if loaded else None,
        on_fatal=on_fatal,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(_start(state))
        state.background.add(task)
        task.add_done_callback(state.background.discard)
        try:
            yield
        finally:
            await _stop(state, task)

    app = FastAPI(
        title="mlship model server",
        version=version,
        description="Predictions from one pinned model version, with health, readiness and metrics.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.mlship = state
    _routes(app, state)
    app.openapi = lambda: _openapi(app, state)  # type: ignore[method-assign]
    app.add_middleware(ObserveMiddleware, state=state)
    mirror.install(app)  # a kubernetes shadow: MLSHIP_SHADOW_URL names the preview Service to copy to
    return app


async def _start(state: ServerState) -> None:
    """Load (unless given loaded), warm with one prediction, then start batching and say ready."""
    try:
        if state.model is None and state.source is not None:
            state.model = await asyncio.to_thread(load, state.source, state.settings)
            state.schema = build_schema(state.model.columns)
        model = state.model
        if model is None:  # pragma: no cover - create_app always sets one of model/source
            raise RuntimeError("no model to serve")
        batcher = MicroBatcher(
            lambda rows: _predict_batch(state, model, rows),
            max_rows=state.settings.serve.max_batch_size,
            max_wait_s=state.settings.serve.max_batch_wait_ms / 1000.0,
            on_batch=state.metrics.observe_batch,
            thread_init=_one_native_thread,
            combine=Columns.concat,
            inline_below_s=INLINE_BELOW_S,
        )
        state.batcher = batcher
        await batcher.call(_warm(model), warmup_rows(model))
        state.predictions = _open_prediction_log(state, model)
        # Everything loaded so far (mlflow, pandas, sklearn, the model) lives for the whole
        # process: keep it out of the cyclic GC, whose full passes over it stalled requests
        # for ~100 ms under load.
        gc.collect()
        gc.freeze()
        batcher.start()
        state.metrics.info.labels(model.name, model.version, state.color).set(1)
        state.metrics.ready.set(1)
        state.ready = True
        state.access.write({"event": "ready", "model": model.name, "uri": model.uri, "pipeline": model.compile_note})
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever broke loading, the server must say so and stop
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        state.failure = f"cannot load or warm the model: {redact(text)}"
        state.access.write({"event": "load_failed", "error": state.failure})
        if state.on_fatal is not None:
            state.on_fatal(exc)


def _one_native_thread() -> None:
    """Run on the prediction thread: one OpenMP/BLAS thread for model calls.

    A batch of a few dozen rows gains nothing from parallel trees, and on a small machine
    OpenMP's spinning workers fight the event loop for the cores: measured here, a
    one-row gradient-boosting call from a worker thread took 23 ms with the default
    threads and 4.4 ms with one.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: PLC0415 - heavy, sklearn's own dependency

    threadpool_limits(1)


def _open_prediction_log(state: ServerState, model: ServedModel) -> PredictionLog | None:
    sample = state.settings.serve.prediction_log_sample
    if state.prediction_log_path is None or sample <= 0:
        return None
    try:
        return PredictionLog(state.prediction_log_path, sample=sample, model_version=model.version)
    except OSError as exc:  # e.g. a read-only image: serve anyway, say that drift has no data
        state.access.write({"event": "prediction_log_disabled", "error": f"{state.prediction_log_path}: {exc}"})
        return None


def _warm(model: ServedModel) -> Callable[[list[dict[str, Any]]], Any]:
    """The warm-up: the rows through the same columnar path the requests take."""
    names = [c.name for c in model.columns]
    return lambda rows: model.predict_columns(Columns.from_rows(rows, names))


def _predict_batch(state: ServerState, model: ServedModel, batch: Columns) -> tuple[Any, Any]:
    """Runs in the prediction thread: one model call, then the class counts and the sampled log."""
    labels, probabilities = model.predict_columns(batch)
    state.metrics.count_predictions(labels)
    if state.predictions is not None:
        rows = batch.rows()
        logged: tuple[Any, Any, Any] = (rows, labels, probabilities)
        if batch.unlogged is not None:
            kept = batch.logged_rows()
            logged = ([rows[i] for i in kept], [labels[i] for i in kept], [probabilities[i] for i in kept])
        try:
            if len(logged[0]):
                state.predictions.record(*logged)
        except OSError as exc:  # a full disk must not fail predictions: stop logging, say so once
            state.access.write({"event": "prediction_log_failed", "error": str(exc)})
            state.predictions.close()
            state.predictions = None
    return labels, probabilities


async def _stop(state: ServerState, task: asyncio.Task[None]) -> None:
    """After uvicorn has drained the requests: finish queued predictions, close the log."""
    state.ready = False
    state.metrics.ready.set(0)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if state.batcher is not None:
        await state.batcher.close()
    if state.predictions is not None:
        state.predictions.close()
    state.access.write({"event": "stopped"})


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


def _routes(app: FastAPI, state: ServerState) -> None:
    limit = state.settings.serve.max_body_bytes
    predict_responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "Predictions, probabilities and the model that made them."},
        413: {"description": f"Body larger than serve.max_body_bytes ({limit} bytes)."},
        422: {"description": "Body does not fit the model's input schema; the message names the field."},
        503: {"description": "The model is not loaded and warmed yet, or the server is shutting down."},
    }

    @app.get("/health", summary="Liveness: 200 while the process is up.")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready", summary="Readiness: 200 once the model is loaded and warmed, else 503.")
    async def ready() -> Response:
        if state.ready:
            return _json({"ready": True, "model": {"name": state.name, "version": state.version}})
        return _json({"ready": False, "reason": state.failure or "loading the model"}, 503)

    @app.get("/version", summary="Model name, version, run id, git sha and color.")
    async def version() -> Response:
        return _json(
            {
                "name": state.name,
                "version": state.version,
                "run_id": state.run_id,
                "git_sha": state.git_sha,
                "color": state.color,
                "model": {"name": state.name, "version": state.version},
            }
        )

    @app.get("/metrics", summary="Prometheus metrics.")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST  # noqa: PLC0415 - prometheus_client: heavy, imported where it is used (off `--help` and the light paths)

        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict", summary="Predict a batch of records.", responses=predict_responses)
    async def predict(request: Request) -> Response:
        batcher, schema, model = state.batcher, state.schema, state.model
        if not state.ready or batcher is None or schema is None or model is None:
            return _json({"detail": state.failure or "the model is not ready yet"}, 503)
        batcher.arriving += 1
        try:
            raw = await read_body(request, limit)
        except BodyTooLarge:
            return _json({"detail": f"request body is larger than {limit} bytes"}, 413)
        except ClientDisconnect:
            return _json({"detail": "the client closed the connection before its body arrived"}, CLIENT_CLOSED)
        finally:
            batcher.arriving -= 1
        try:
            rows = schema.parse_columns(raw)
            if SYNTHETIC_HEADER in request.headers:
                rows = rows.not_logged()
            labels, probabilities = await batcher.predict(rows)
        except InvalidRequest as exc:
            return _json({"detail": exc.errors, "message": exc.message}, 422)
        except BatcherClosed:
            return _json({"detail": "the server is shutting down"}, 503)
        except Exception as exc:  # noqa: BLE001 - a model error is this request's 500, not the server's end
            state.access.write({"event": "prediction_failed", "error": f"{type(exc).__name__}: {exc}"})
            return _json({"detail": f"prediction failed: {type(exc).__name__}"}, 500)
        return _json(
            {
                "predictions": labels,
                "probabilities": probabilities,
                "model": {"name": model.name, "version": model.version},
            }
        )

    v2.add_routes(app, state)  # the Open Inference Protocol beside /predict


def _openapi(app: FastAPI, state: ServerState) -> dict[str, Any]:
    """FastAPI's document plus the request body derived from the model signature."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi  # noqa: PLC0415 - fastapi: heavy, imported where it is used (off `--help` and the light paths)

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    if state.schema is None:
        return doc  # not cached: the body schema appears once the model is loaded
    body = state.schema.openapi()
    definitions = body.pop("$defs", {})
    doc.setdefault("components", {}).setdefault("schemas", {}).update(definitions)
    doc["paths"]["/predict"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": body}},
    }
    if state.model is not None:
        v2.document(doc, state.model)
    app.openapi_schema = doc
    return doc


class ObserveMiddleware:
    """Pure ASGI (no per-request task): status, latency, metrics and one access line per request."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        synthetic = any(name == SYNTHETIC_HEADER.encode() for name, _ in scope.get("headers", ()))
        key = next((v.decode("latin-1") for n, v in scope.get("headers", ()) if n == KEY_HASH_HEADER), None)

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.state.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.state.metrics.in_progress.dec()
            seconds = time.perf_counter() - started
            path, method = scope.get("path", ""), scope.get("method", "")
            # a 503 while not ready (warm-up, shutdown) is the truth about readiness, not an error
            unready = status == 503 and not self.state.ready
            self.state.metrics.observe_request(
                path, method, status, seconds, synthetic=synthetic, count_error=not unready
            )
            self.state.access.access(method, path, status, seconds, key_hash=key)
