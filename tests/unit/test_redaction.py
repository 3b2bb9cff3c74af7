"""Credentials in URIs never reach a message, log or report; children get only the secrets they use."""

from __future__ import annotations

import logging

import pytest

from mlship.redaction import MLFLOW_CLIENT_SECRETS, env_for_child, is_secret_variable, redact, redact_logs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:pass@mlflow:5000", "http://***@mlflow:5000"),
        ("MLflow https://tok3n@host/api is down", "MLflow https://***@host/api is down"),
        ("postgresql+psycopg2://admin:s3cr%40t@db:5432/mlflow", "postgresql+psycopg2://***@db:5432/mlflow"),
        ("https://host/x?token=abc123&page=2", "https://host/x?token=***&page=2"),
        (
            "s3://b/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=deadbeef",
            "s3://b/k?X-Amz-Credential=***&X-Amz-Signature=***",
        ),
        ("https://h/p?sig=Zm9v&sv=2020", "https://h/p?sig=***&sv=2020"),
        ("http://h/?API_KEY=k1;password=p2", "http://h/?API_KEY=***;password=***"),
        # nothing secret: unchanged
        ("models:/card-fraud@champion", "models:/card-fraud@champion"),
        ("sqlite:////tmp/x/mlflow.db", "sqlite:////tmp/x/mlflow.db"),
        ("runs:/abc/model and user@example.com", "runs:/abc/model and user@example.com"),
        ("https://host/path?page=2&tokenizer=bpe", "https://host/path?page=2&tokenizer=bpe"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redact_logs()
    redact_logs()  # idempotent: one wrapper, not two
    with caplog.at_level(logging.WARNING):
        # Not an `mlflow.*` logger: once mlflow is imported (by any earlier test) it stops those
        # propagating to the root handler caplog reads; the factory redacts every record anyway.
        logging.getLogger("mlship.tracking").warning("retrying %s (%d)", "http://u:p@host:5000/api", 2)
        logging.getLogger("plain").warning("nothing to hide %s", "models:/m@champion")
    assert [r.getMessage() for r in caplog.records] == [
        "retrying http://***@host:5000/api (2)",
        "nothing to hide models:/m@champion",
    ]


def test_children_get_only_the_secrets_they_need() -> None:
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/home/ci",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLFLOW_TRACKING_PASSWORD": "pw",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "GITHUB_TOKEN": "ghp_x",
        "REGISTRY_PASSWORD": "docker",
        "KUBECONFIG": "/home/ci/.kube/config",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    plain = env_for_child(environ=parent)
    assert plain == {
        "PATH": "/usr/bin",
        "HOME": "/home/ci",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    server = env_for_child(MLFLOW_CLIENT_SECRETS, extra={"MLSHIP_PORT": "8000"}, environ=parent)
    assert set(server) == {*plain, "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MLSHIP_PORT"}
    assert "GITHUB_TOKEN" not in server and "KUBECONFIG" not in server


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DOCKER_PASSWORD", True),
        ("api_key", True),
        ("KUBECONFIG", True),
        ("PATH", False),
        ("MLFLOW_TRACKING_URI", False),
    ],
)
def test_secret_variable_names(name: str, secret: bool) -> None:
    assert is_secret_variable(name) is secret
