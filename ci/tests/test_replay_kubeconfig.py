"""Any kubeconfig a user has, through the Dagger deploy path (issue 21 item 5), replayed on Docker.

A laptop cluster's server is on 127.0.0.1: `deploy`/`rollback` reach it through the engine's host
tunnel (a host service bound as `kube-api`) with the server rewritten in a tmpfs copy and the
certificate still verified against the original name; a kubeconfig that logs in with an exec
plugin is refused before anything runs against the cluster. The API server is a TLS endpoint on
127.0.0.1 (replay/fake_apiserver.py) with a CA made here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagger
import pytest
from dagger import dag
from replay import tier as replay_tier
from replay.fake_apiserver import FakeApiServer, make_ca, running
from replay.tier import Tier, pipeline

pytestmark = pytest.mark.replay


@pytest.fixture(scope="module")
def tier(request: pytest.FixtureRequest) -> Tier:
    return replay_tier.get(request.config)


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeApiServer]:
    with running(tmp_path_factory.mktemp("apiserver"), token=f"tok-{uuid.uuid4().hex}") as server:
        yield server


def _labels(tier: Tier, first: int) -> list[str]:
    return [t.label for t in tier.interp.terminals[first:]]


def test_a_kubeconfig_with_an_exec_plugin_is_refused_before_any_call(tier: Tier, apiserver: FakeApiServer) -> None:
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", "prod"],
        }
    }
    kc = dag.set_secret("kc-exec", apiserver.kubeconfig(user=user))
    first, seen = len(tier.interp.terminals), len(apiserver.requests)
    image = "127.0.0.1:5000/mlship-serving@sha256:" + "0" * 64
    with pytest.raises(ValueError) as info:
        tier.run(lambda: pipeline().deploy(kubeconfig=kc, image=image))
    message = str(info.value)
    assert type(info.value).__name__ == "UsageError", message
    assert "exec plugin 'aws'" in message and "token kubeconfig" in message and "\n" not in message
    assert not any("mlship" in label for label in _labels(tier, first)), "no stage ran"
    assert len(apiserver.requests) == seen, "nothing talked to the cluster"


def test_rollback_reaches_a_loopback_api_server_through_the_host_tunnel_with_tls_verified(
    tier: Tier, apiserver: FakeApiServer
) -> None:
    kc = dag.set_secret("kc-loopback", apiserver.kubeconfig())
    seen = len(apiserver.requests)
    try:
        out = tier.run(lambda: pipeline().rollback(kubeconfig=kc))
    except dagger.ExecError as exc:  # an empty cluster has no release to roll back to
        out = exc.stdout + "\n" + exc.stderr
    calls = apiserver.requests[seen:]
    # kubectl's discovery reached the server at 127.0.0.1 from inside the container, over TLS it
    # verified (tls-server-name 127.0.0.1 against the cluster CA), with the kubeconfig's token
    assert calls and all(authorised for _m, _p, authorised in calls), calls
    assert ("GET", "/api?timeout=32s", True) in calls, calls
    assert "x509" not in out and "connection refused" not in out and "no such host" not in out, out


def test_the_tunnel_keeps_certificate_verification(tier: Tier, apiserver: FakeApiServer, tmp_path: Path) -> None:
    """The same kubeconfig trusting another CA: kubectl refuses the server's certificate."""
    _key, other_ca = make_ca(tmp_path, "other-ca")
    kc = dag.set_secret("kc-other-ca", apiserver.kubeconfig(ca_pem=other_ca.read_bytes()))
    seen = len(apiserver.requests)
    with pytest.raises(dagger.ExecError) as info:
        tier.run(lambda: pipeline().rollback(kubeconfig=kc))
    text = info.value.stdout + info.value.stderr
    assert "x509" in text or "certificate" in text, text
    assert not any(a for _m, _p, a in apiserver.requests[seen:]), "no request got past the TLS handshake"
