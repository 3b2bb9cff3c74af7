"""How `mlship status` shows a deployment: the text a person reads, and what to type when it is down.

A helper of the `deploy` commands (not a command module: the leading underscore keeps it out of
command discovery).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlship import cli


def _label(rel: dict[str, Any]) -> str:
    return f"{rel.get('name')} v{rel.get('version')}" if rel.get("version") else str(rel.get("uri", "-"))


def repair(info: dict[str, Any], env: str) -> str:
    """What to type when `status` finds the live path down."""
    flags = "" if env == "staging" else f" --env {env}"
    if info["live"] is None:
        return f"deploy a model: `mlship deploy --model models:/NAME@ALIAS{flags}`"
    if info["deploy_in_progress"]:
        return "a deploy is running: wait for it, then run `mlship status` again"
    if "is saturated, not the release" in str(info.get("problem")):  # from the local router's own figures
        return "a rollback cannot help: stop or slow the client holding the connections, then run `mlship status`"
    return f"roll back with `mlship rollback{flags}`, or redeploy; `mlship down{flags}` stops what is left"


def print_status(info: dict[str, Any]) -> None:
    """`mlship status` for people: the live path, the router, the colors, what a rollback brings back, history."""
    from rich.table import Table  # noqa: PLC0415 - rich renders only when status prints, not for `mlship --help`

    out = cli.console()
    for note in info["reconciled"]:
        out.print(f"reconciled: {note}")
    if info["deploy_in_progress"]:
        out.print(f"a deploy is in progress: {info['deploy_in_progress']}")
    out.print(f"{info['target']}/{info['env']}: live {info['live'] or '-'} at {info['live_url'] or '-'}")
    router = info.get("router")
    if router:
        supervised = "supervised" if router["supervisor_pid"] else "NOT supervised"
        up = f"up (pid {router['pid']}, {supervised})" if router["up"] else "DOWN"
        out.print(f"router on {router['url']}: {up}")
        if router.get("failover"):
            f = router["failover"]
            out.print(f"failover: {f['from']} → {f['to']} because {f['reason']}")
    shadow = info.get("shadow")
    if shadow:
        out.print(_shadow_line(shadow))
    colors = Table(title="colors")
    for col in ("color", "running", "release", "outcome"):
        colors.add_column(col)
    for color, c in info["colors"].items():
        rel = c["release"] or {}
        label = f"{rel.get('name')} v{rel.get('version')}" if rel.get("version") else rel.get("uri", "-")
        colors.add_row(color, "yes" if c["running"] else "no", label, rel.get("outcome", "-"))
    out.print(colors)
    back = info.get("rollback_to")
    if back:
        how = "one switch (warm)" if back["warm"] else "a full blue-green deploy"
        out.print(f"rollback target: {back['label']} ({how})")
    retire = info.get("retire")
    if retire:
        at = dt.datetime.fromtimestamp(retire["at"], tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        how = "" if retire["scheduled"] else " (at the next deploy or rollback: no retirement process runs)"
        out.print(f"previous color {retire['color']} retires at {at}{how}; until then a rollback is one switch")
    history = Table(title="history (newest first)")
    for col in ("when", "version", "color", "outcome", "detail"):
        history.add_column(col)

    for r in info["history"]:
        when = dt.datetime.fromtimestamp(r["deployed_at"], tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        history.add_row(when, r.get("version") or r["uri"], r["color"], r["outcome"], r["detail"][:80])
    out.print(history)


def _shadow_line(shadow: dict[str, Any]) -> str:
    """One line: what the shadow compares and how it is doing."""
    rel = shadow["release"]
    head = f"shadow: {_label(rel)} on {shadow['color']} gets {shadow['sample']:.0%} of live /predict requests"
    f = shadow.get("figures")
    if not f:
        return head + " (no figures: the copier did not answer)"
    agreement = "-" if f["agreement"] is None else f"{f['agreement']:.2%}"
    diff = f["abs_diff"]
    mean = "-" if diff["mean"] is None else f"{diff['mean']:.4f}"
    p99 = "-" if diff["p99"] is None else f"{diff['p99']:.4f}"
    latency = f["latency_ms"]["p99"]
    took = "-" if latency is None else f"{latency:.0f} ms"
    waiting = f.get("queued", 0)
    line = (
        f"{head}; {f['compared_rows']} rows compared ({f['requests']} copies answered), class agreement "
        f"{agreement}, |Δp| mean {mean} p99 {p99}; candidate p99 {took}, {f['errors']} errors, "
        f"{waiting} copies waiting, {f['dropped']} dropped"
    )
    refused = shadow.get("promotion_refused")
    return f"{line}; --promote-shadow would be refused: {refused}" if refused else line
