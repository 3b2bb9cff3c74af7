"""benchmarks/README.md, generated from benchmarks/results/*.json and the prose of README.template.md.

    uv run python benchmarks/readme.py            # rewrite benchmarks/README.md
    uv run python benchmarks/readme.py --check    # write nothing; exit 1 when it is stale

The template explains what each benchmark measures and how to run it; each `<!-- results: NAME -->`
line in it becomes the figures of results/NAME.json: when and where they were measured (the JSON's
`measured_at` and `machine`), then a table of every figure the JSON holds. Options after the name:
`skip=PATTERN,…` leaves out the figures whose dotted path matches a pattern (fnmatch; raw per-round
samples, say), `table=serving` renders the serving benchmark's own table. Every results file must be
placed exactly once, so a new benchmark cannot go unexplained (tests/unit/test_benchmarks_readme.py).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TEMPLATE = HERE / "README.template.md"
README = HERE / "README.md"
COMMAND = "uv run python benchmarks/readme.py"
PLACEHOLDER = re.compile(r"^<!-- results: (?P<name>[\w.-]+)(?P<options>(?: [\w]+=\S+)*) -->$", re.M)
FACTS = ("benchmark", "measured_at", "machine", "command")

# The serving benchmark's table (benchmarks/serving.py writes results/serving.json) -----------------

V2_ROWS = 4096
LABELS = {"json1": "1 record", "json32": "32 records", "json256": "256 records", "v2bin4096": "4,096 rows, V2 binary"}
ROWS = {"json1": 1, "json32": 32, "json256": 256, "v2bin4096": V2_ROWS}


def serving_table(result: dict[str, Any]) -> str:
    """The serving benchmark's table and ratios to the constant endpoint, from a result serving.py wrote."""
    summary = result["summary"]
    medians = summary["medians"]
    kinds = [k for k in ("mlship", "constant", "mlflow") if k in medians]
    names = {"mlship": "`mlship serve`", "constant": "constant answer (ceiling)", "mlflow": "`mlflow models serve`"}
    load = result["load_average_before"], result["load_average_after"]
    lines = [
        f"wrk `-t{result['wrk']['threads']} -c{result['wrk']['connections']}`, {result['passes']} passes of "
        f"{result['wrk']['duration_s']:g} s, medians; load average {load[0][0]:g} before, {load[1][0]:g} after.",
        "",
        "| body | " + " | ".join(names[k] for k in kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for body, label in LABELS.items():
        cells = []
        for kind in kinds:
            point = medians[kind].get(body)
            if point is None:
                cells.append("—")
                continue
            rows = f", {point['rps'] * ROWS[body]:,.0f} rows/s" if ROWS[body] > 1 and kind == "mlship" else ""
            failed = f", {point['failed']} failed" if point["failed"] else ""
            latency = f"p50 {point['p50_ms']:g} / p99 {point['p99_ms']:g} ms"
            cells.append(f"{point['rps']:,.0f} req/s{rows}; {latency}{failed}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "ratio_1_record" in summary:
        meets = summary["meets"]
        mark = {True: "met", False: "**not met**"}
        p99 = medians["mlship"]["json32"]["p99_ms"]
        v2 = summary["rows_per_constant_rps_v2"]
        lines += [
            "",
            f"Against the constant endpoint's {summary['constant_1_record_rps']:,.0f} req/s: 1 record "
            f"{summary['ratio_1_record']:.0%} (target ≥ 60%: {mark[meets['ratio_1_record']]}); 32 records "
            f"{summary['rows_per_constant_rps_32']:g} rows per constant req/s at p99 {p99:g} ms (target ≥ 8 at "
            f"≤ 25 ms: {mark[meets['rows_per_constant_rps_32']]}); 256 records "
            f"{summary['rows_per_constant_rps_256']:g}; 4,096-row V2 binary {v2:g} (target ≥ 40: "
            f"{mark[meets['rows_per_constant_rps_v2']]})."
            + (
                f" One record: {summary['mlship_vs_mlflow_1_record']:g}× MLflow's scoring server."
                if "mlship_vs_mlflow_1_record" in summary
                else ""
            ),
        ]
    profile = result.get("profile_32_records") or {}
    if "predict_total_us" in profile:
        lines += [
            "",
            f"Inside the server, one 32-record request (in-process, best of 7): parse and validate "
            f"{profile['parse_and_validate_us']:g} µs, feature matrix {profile['features_us']:g} µs, trees "
            f"{profile['trees_us']:g} µs (model call in all {profile['predict_total_us']:g} µs; the scikit-learn "
            f"pipeline itself {profile['pipeline_predict_proba_us']:,.0f} µs), response encoding "
            f"{profile['response_encoding_us']:g} µs; the rest of a request is the HTTP/ASGI stack the constant "
            "endpoint also pays, and the event loop's share of two cores that wrk shares too.",
        ]
    return "\n".join(lines)


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {"serving": serving_table}

# Any results file -------------------------------------------------------------------------------


def cell(value: Any) -> str:
    """One value as a markdown table cell."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        return ", ".join(cell(v) for v in value) if value else "—"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split()).replace("|", "\\|")


def flatten(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, leaf) pairs; a list of records stays whole (it becomes a table of its own)."""
    if isinstance(value, dict):
        pairs: list[tuple[str, Any]] = []
        for key, item in value.items():
            pairs += flatten(item, f"{path}.{key}" if path else str(key))
        return pairs
    return [(path, value)]


def records_table(rows: list[dict[str, Any]]) -> list[str]:
    """A list of records as one table: a column per (flattened) field, in first-seen order."""
    flat = [dict(flatten(row)) for row in rows]
    columns: list[str] = []
    for row in flat:
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join(f"`{c}`" for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in flat]
    return lines


def facts(name: str, result: dict[str, Any]) -> str:
    """When, where and how a result was measured, as far as its JSON says."""
    machine = result.get("machine") or {}
    where = ", ".join(f"{k} {cell(v)}" for k, v in machine.items()) if machine else "machine not recorded in the JSON"
    when = result.get("measured_at") or "date not recorded in the JSON"
    text = f"*Measured {when}; {where}. Figures: [`results/{name}.json`](results/{name}.json)"
    if result.get("command"):
        text += f"; command `{cell(result['command'])}`"
    return text + ".*"


def render_result(name: str, result: dict[str, Any], skip: list[str], table: str | None) -> str:
    """The block a placeholder becomes: the facts line, then the figures."""
    lines = [facts(name, result), ""]
    if table is not None:
        lines += [TABLES[table](result), ""]
    scalars: list[tuple[str, Any]] = []
    tables: list[tuple[str, list[dict[str, Any]]]] = []
    for path, value in flatten({k: v for k, v in result.items() if k not in FACTS}):
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in skip):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append((path, value))
        else:
            scalars.append((path, value))
    if scalars:
        lines += ["| figure | value |", "|---|---:|", *[f"| `{path}` | {cell(value)} |" for path, value in scalars]]
    for path, rows in tables:
        lines += ["", f"`{path}`:", "", *records_table(rows)]
    return "\n".join(lines).rstrip("\n")


def _options(text: str) -> tuple[list[str], str | None]:
    skip: list[str] = []
    table: str | None = None
    for option in text.split():
        key, _, value = option.partition("=")
        if key == "skip":
            skip += [p for p in value.split(",") if p]
        elif key == "table" and value in TABLES:
            table = value
        else:
            raise ValueError(f"unknown placeholder option {option!r} (known: skip=PATTERN,…, table={'|'.join(TABLES)})")
    return skip, table


def render(template: str, results: Path = RESULTS) -> str:
    """The README: the template with each placeholder replaced by its results file's figures."""
    available = {p.stem: p for p in sorted(results.glob("*.json"))}
    placed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in available:
            raise ValueError(f"the template names results/{name}.json, which does not exist")
        if name in placed:
            raise ValueError(f"the template places results/{name}.json twice")
        placed.append(name)
        skip, table = _options(match.group("options"))
        result = json.loads(available[name].read_text(encoding="utf-8"))
        return render_result(name, result, skip, table)

    page = PLACEHOLDER.sub(replace, template)
    missing = sorted(set(available) - set(placed))
    if missing:
        raise ValueError(
            f"results/{missing[0]}.json is not in the template: add a section explaining it with "
            f"`<!-- results: {missing[0]} -->` to {TEMPLATE.name}"
        )
    note = f"<!-- Generated by `{COMMAND}` from {TEMPLATE.name} and results/*.json: do not edit by hand. -->\n"
    return note + page


def write(path: Path, text: str) -> None:
    """Atomically: a reader sees the old file or the new one, never half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: list[str] | None = None, template: Path = TEMPLATE, results: Path = RESULTS) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/readme.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=README, help="the page to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the page is stale")
    args = parser.parse_args(argv)
    try:
        page = render(template.read_text(encoding="utf-8"), results)
    except (OSError, ValueError, KeyError) as exc:
        print(f"benchmarks/readme.py: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.is_file() else None
        if current != page:
            print(f"benchmarks/readme.py: error: {args.path} is out of date (run `{COMMAND}`)", file=sys.stderr)
            return 1
        return 0
    write(args.path, page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
