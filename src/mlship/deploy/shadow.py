"""shadow.md: the report of a shadow, from the comparison figures its copier gathered (`mlship.traffic`)."""

from __future__ import annotations

import json
from typing import Any


def render_markdown(summary: dict[str, Any], *, live: str = "live", candidate: str = "candidate") -> str:
    """shadow.md: the verdict numbers first, then the rows where the two disagree most."""

    def num(value: Any, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    diff, lat = summary["abs_diff"], summary["latency_ms"]
    lines = [
        f"# Shadow: {candidate} vs {live}",
        "",
        f"- copies answered: {summary['requests']} (offered {summary['offered']}, "
        f"waiting {summary.get('queued', 0)}, dropped {summary['dropped']}, sample {summary['sample']:g})",
        f"- rows compared: {summary['compared_rows']}; class agreement: {num(summary['agreement'], '.2%')}",
        f"- |probability difference|: mean {num(diff['mean'])}, p99 {num(diff['p99'])}, max {num(diff['max'])}",
        f"- candidate errors: {summary['errors']}; latency p50 {num(lat['p50'], '.1f')} ms, "
        f"p99 {num(lat['p99'], '.1f')} ms",
        "",
        "## Rows where they disagree most",
        "",
    ]
    rows = summary["disagreements"]
    if not rows:
        lines.append("(none yet)")
    else:
        lines += ["| live | candidate | abs diff | record |", "|---|---|---|---|"]
        for r in rows:
            rec = json.dumps(r["record"], sort_keys=True).replace("|", "\\|")
            lv, cd = r["live"], r["candidate"]
            lines.append(
                f"| {lv['prediction']} ({lv['probability']}) | {cd['prediction']} ({cd['probability']}) "
                f"| {r['abs_diff']} | `{rec}` |"
            )
    return "\n".join(lines) + "\n"
