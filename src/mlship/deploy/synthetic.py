"""Only the deploy can mark its own traffic as synthetic.

mlship's own requests (readiness probes, smoke tests, verification probes, shadow copies)
carry `x-mlship-synthetic: <purpose>`, and a model server keeps them out of its prediction
log, drift input and shadow copies. A client must not be able to do the same and hide from
monitoring, so the router strips the header from every request on the public port unless
it comes with `x-mlship-synthetic-proof`: HMAC-SHA256, keyed with the router's token (the
0600 `router.token` only the deploy can read), of `x-mlship-synthetic:<purpose>`. The proof
is checked and removed by the router; the color only ever sees the bare marker. The router
also strips `x-mlship-key-hash` from clients: only its sticky routing sets it.

Requests that go to a color directly (smoke tests on the preview port, `wait_ready`, the
router's own probes, shadow copies) do not pass the public port and need no proof. The
admin token itself never travels on the public port: the proof is derived from it.
"""

from __future__ import annotations

import hashlib
import hmac

SYNTHETIC_HEADER = "x-mlship-synthetic"
PROOF_HEADER = "x-mlship-synthetic-proof"


def proof(token: str, purpose: str) -> str:
    """The proof that a request marked synthetic with `purpose` comes from whoever holds `token`."""
    message = f"{SYNTHETIC_HEADER}:{purpose}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def valid(token: str | None, purpose: bytes, given: bytes) -> bool:
    """Does `given` (the proof header's value) prove `purpose` under `token`? Never without a token."""
    if not token or not given:
        return False
    expected = proof(token, purpose.decode("latin-1")).encode()
    return hmac.compare_digest(expected, given)


def headers(purpose: str, token: str | None = None) -> dict[str, str]:
    """The marker for a request with `purpose`, and its proof when the request goes through a router.

    Purposes are lower-case: the router reads field values case-insensitively.
    """
    purpose = purpose.lower()
    out = {SYNTHETIC_HEADER: purpose}
    if token:
        out[PROOF_HEADER] = proof(token, purpose)
    return out
