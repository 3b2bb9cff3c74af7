"""The local router: owns the live port and forwards each HTTP/1.1 request to a color.

Raw asyncio streams (uvloop when installed) keep it far cheaper than the model servers
behind it. The route (backends + weights + standby) is one immutable object replaced in a
single assignment, so a switch is atomic: a request goes wholly to the old color or wholly
to the new one. Per-color counters (requests, errors, latency histogram, requests in
flight) are the signal the blue-green controller verifies a release on and drains a color by.

Failover: the route may name a `standby`, the previous color kept warm for the rollback
window. A request the live color cannot answer is sent to the standby instead, and when
the live color fails its `/ready` probes while the standby answers them, the router makes
the standby live and records why (`failover` in the state); the controller then adopts it.

Limits: request bodies over `max_body` get 413 before any of the body is read; a request
head must arrive within the header timeout, a body within the body timeout, and a kept-alive
connection that stays silent is closed after the idle timeout. Fair share: at most
`max_per_address` connections from one client address (more get 429), at most
`max_connections` in all; past half of that the idle timeout shrinks with the load, and at
the cap a new client takes the place of an idle connection (waiting for its next request)
of the address holding the most, so idle sockets cannot lock others out. Only when every
connection is busy with a request does a newcomer get 503 ("saturated"). Error bodies say
what is wrong, never how (no addresses, no exception text).

Admin API (JSON, another loopback port, `authorization: Bearer <token>` where the token is
the content of a 0600 file): `GET /state`, `POST /route` with `{"backends": {"blue":
"127.0.0.1:9001"}, "weights": {"blue": 100}, "standby": null}`. The route is also
persisted, so a restarted router serves the same color.

Run as `python -m mlship.deploy.router --port 8000 --admin-port 8001 --route-file F --token-file T`;
with `--supervise` the process is a supervisor that runs the router as its child and
restarts it whenever it dies, so the live port heals without waiting for an mlship command.

Modules: `route` (where a request goes), `proxy` (the `Router`: forwarding and the admin API),
`parse` (strict RFC 9112 request parsing), `wire` (the router's own answers, relaying a
color's), `admission` (limits and fair share), `failover` (probes and the standby),
`counters` (per-color figures), `process` (command line, supervisor).
"""

from mlship.deploy.router.admission import MAX_BODY, MAX_CONNECTIONS, Limits
from mlship.deploy.router.counters import BUCKETS_MS, Counters
from mlship.deploy.router.failover import FAILOVER_AFTER, FAILOVER_AFTER_SLOW
from mlship.deploy.router.process import main, run, supervise
from mlship.deploy.router.proxy import Router
from mlship.deploy.router.route import Route

__all__ = [
    "BUCKETS_MS",
    "FAILOVER_AFTER",
    "FAILOVER_AFTER_SLOW",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "Counters",
    "Limits",
    "Route",
    "Router",
    "main",
    "run",
    "supervise",
]
