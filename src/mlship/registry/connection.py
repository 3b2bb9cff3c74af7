"""MLflow's connection: quiet logging, one-line errors for an unreachable store, a fast server check."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

from mlship.errors import InfraError, MlshipError


def quiet() -> None:
    """MLflow without telemetry, progress bars, its deprecation warnings or its INFO logging."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    for category in (DeprecationWarning, FutureWarning, UserWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"mlflow(\.|$)")
        warnings.filterwarnings("ignore", category=category, module=r"sqlalchemy(\.|$)")
        warnings.filterwarnings("ignore", category=category, module=r"alembic(\.|$)")
    warnings.filterwarnings("ignore", message=r".*noload.*")
    warnings.filterwarnings("ignore", message=r".*Pandas4Warning.*")
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def infra(action: str) -> Iterator[None]:
    """Turn MLflow's connection failures into one-line exit-3 errors."""
    try:
        yield
    except MlshipError:
        raise
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if looks_like_connection_error(exc):
            raise InfraError(
                f"MLflow is unreachable while trying to {action}: {text}",
                hint="check MLFLOW_TRACKING_URI and that the server is up",
            ) from exc
        raise


def looks_like_connection_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in chain(exc)}
    text = " ".join(str(e) for e in chain(exc)).lower()
    return bool(
        names
        & {
            "ConnectionError",
            "MaxRetryError",
            "NewConnectionError",
            "ConnectTimeout",
            "ReadTimeout",
            "ConnectionRefusedError",
            "OperationalError",
        }
    ) or ("max retries exceeded" in text or "connection refused" in text or "unable to open database" in text)


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def check_server(uri: str) -> None:
    """Fail fast (exit 3) when a tracking server does not answer, instead of MLflow's long retries.

    The probe is MLflow's own request, one try: the credentials and TLS settings MLflow's client
    would send (MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD or ~/.mlflow/credentials,
    a CA bundle, a client certificate, an auth plugin), so a server behind authentication never
    sees an anonymous request from mlship, and a private CA does not read as "unreachable".
    Any answer counts, a 401 too: the requests that need the credentials say so themselves.
    """
    # MLflow resolves its own credentials (env, ~/.mlflow/credentials, plugins): mlflow is heavy, and
    # only a remote tracking server needs the probe
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - mlflow: heavy, only this probe needs it
    from mlflow.utils.credentials import get_default_host_creds  # noqa: PLC0415 - as above
    from mlflow.utils.rest_utils import http_request  # noqa: PLC0415 - mlflow: heavy, only this probe needs it

    creds = get_default_host_creds(uri.rstrip("/"))  # type: ignore[no-untyped-call]  # mlflow has no annotations
    try:
        http_request(creds, "/health", "GET", max_retries=0, timeout=5, raise_on_status=False)  # type: ignore[no-untyped-call]
    except MlflowException as exc:  # MLflow wraps every transport error in it
        reason = str(exc.message).splitlines()[0] if str(exc.message) else type(exc).__name__
        raise InfraError(
            f"MLflow tracking server {uri} is unreachable: {reason}", hint="start it or fix MLFLOW_TRACKING_URI"
        ) from None
