"""Secrets stay out of what people read: one redaction for messages, logs and reports, and a
trimmed environment for child processes.

A tracking URI such as `https://user:token@mlflow.example/` or a pre-signed artifact URL with
`?X-Amz-Signature=…` is configuration, not a secret store, but it carries one; every line
mlship prints or writes passes through `redact`. Child processes get `env_for_child`: the
parent's environment without the secret-bearing variables they do not use.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping

MASK = "***"

# scheme://user:password@host or scheme://token@host: the whole user info goes.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@?#]+)@")
_SECRET_PARAM_NAMES = (
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "authorization",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pwd",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
)
_QUERY_SECRET = re.compile(
    r"(?P<sep>[?&;])(?P<name>" + "|".join(re.escape(n) for n in _SECRET_PARAM_NAMES) + r")=(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)

SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|API_?KEY|ACCESS_KEY|PRIVATE_KEY|AUTH)", re.I)
"""An environment variable whose name says it holds a secret."""
SECRET_VARIABLES = (
    "KUBECONFIG",
    "DOCKER_AUTH_CONFIG",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_CONNECTION_STRING",
    "MLSHIP_WEBHOOK_URL",
)
"""Secret-bearing variables whose names do not say so."""

MLFLOW_CLIENT_SECRETS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCESS_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
)
"""What a process that reads models from MLflow (a model server, a batch job) may need:
the tracking server's credentials and those of the artifact store behind it."""

KUBECTL_SECRETS = (
    "KUBECONFIG",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_CLIENT_SECRET",
)
"""What kubectl may need: the kubeconfig and the cloud credentials its exec auth plugins
(`aws eks get-token`, gke-gcloud-auth-plugin, kubelogin) read."""

DOCKER_SECRETS = ("DOCKER_AUTH_CONFIG",)
"""What the docker CLI may need beyond its config directory."""


def redact(text: str) -> str:
    """`text` with URI user info and secret query parameters replaced by `***`."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['sep']}{m['name']}={MASK}", text)


def is_secret_variable(name: str) -> bool:
    """True for an environment variable that (by name or by convention) holds a credential."""
    return name.upper() in SECRET_VARIABLES or bool(SECRET_NAME.search(name))


def env_for_child(
    needs: Iterable[str] = (), *, extra: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a child process: the parent's minus every secret it does not `need`.

    Ordinary variables (PATH, HOME, locale, proxies, MLFLOW_TRACKING_URI…) pass through;
    a variable that holds a secret passes only when named in `needs`. `extra` is added
    last (the child's own settings). A tracking URI with credentials in it is passed
    as is: the child needs it to reach the server, and it never prints it unredacted.
    """
    source = os.environ if environ is None else environ
    keep = {n.upper() for n in needs}
    env = {k: v for k, v in source.items() if not is_secret_variable(k) or k.upper() in keep}
    env.update(extra or {})
    return env


class _RedactingFactory:
    """A log record factory that redacts the formatted message of every record."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: object, **kwargs: object) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: let logging report it as usual
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record


def redact_logs() -> None:
    """Redact every log record of this process (idempotent): libraries log URIs too."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(current))
