"""`mlship drift`, `mlship abtest`: watch a shipped model and decide canaries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlship import cli, notify
from mlship.report_text import one_line

if TYPE_CHECKING:
    from mlship.monitoring.abtest_analysis import AbReport, Arm
    from mlship.settings import Settings


def drift(
    ctx: typer.Context,
    reference: Annotated[Path, typer.Option("--reference", help="Reference data (CSV/Parquet), e.g. training data.")],
    current: Annotated[Path, typer.Option("--current", help="Current data (CSV/Parquet) or JSONL prediction log.")],
    report_dir: Annotated[
        Path | None, typer.Option("--report-dir", help="Where drift.json/.md/PNGs go (default: .mlship/reports).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model URI (models:/NAME@ALIAS, runs:/ID/model, or a dir) that scores the reference, and the "
            "current data unless it is a prediction log, so prediction drift is reported.",
        ),
    ] = None,
) -> None:
    """Detect feature drift (exit 0 none, 1 drift, 2 bad input); prediction drift is reported alongside.

    Prediction drift compares the model's probability on both sides: from the prediction log
    when --current is one, computed with --model otherwise. It does not change the exit code.
    """

    def action(settings: Settings) -> int:
        from mlship.monitoring.drift import check, detect  # noqa: PLC0415 - pandas/scipy: kept off `--help`

        report = detect(settings, reference, current, report_dir, model)
        from rich.table import Table  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)

        table = Table(title="drift")
        for col in ("feature", "effect", "PSI", "verdict"):
            table.add_column(col)
        for f in report.features + ([report.prediction] if report.prediction else []):
            table.add_row(
                f.feature, f"{f.effect_name}={f.effect:.4f}", f"{f.psi:.4f}", "DRIFT" if f.drifted else f.level
            )
        cli.console().print(table)
        for w in report.warnings:
            cli.err_console().print(f"warning: {w}")
        notify.drift(settings, report, report_dir)
        return check(report)

    cli.run(ctx, action)


def _counts(text: str, option: str) -> tuple[int, int]:
    try:
        s, n = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise typer.BadParameter(f"expected SUCCESSES/N, got {text!r}", param_hint=option) from exc
    return s, n


ABTEST_HELP = """\
Decide an A/B test or a canary with a one-sided two-proportion z-test, no peeking.

Either pass counts (--control S/N --treatment S/N) or an events file (--events PATH: CSV,
Parquet or JSONL, one row per exposure with an arm column and a 0/1 outcome column).
Without --control-arm/--treatment-arm the arms come from the running canary of --env:
the live color is the control, the canary color the treatment, and the canary's traffic
share is the split the sample-ratio-mismatch check expects. --apply then acts on the
canary: promote (all traffic to it, verify, make it live), reject (all traffic back to the
live color, canary stopped) or inconclusive (nothing changes).

Exit codes: 0 promote or inconclusive (keep collecting), 1 reject, or a sample ratio
mismatch (p < 0.001: the split is broken, so nothing is decided or moved), 2 bad input.
Writes abtest.json and abtest.md to the report dir.
"""


def abtest(
    ctx: typer.Context,
    control: Annotated[str | None, typer.Option("--control", help="Control arm as SUCCESSES/N.")] = None,
    treatment: Annotated[str | None, typer.Option("--treatment", help="Treatment arm as SUCCESSES/N.")] = None,
    events: Annotated[
        Path | None,
        typer.Option("--events", help="Events file (CSV, Parquet or JSONL): one row per exposure, arm + 0/1 outcome."),
    ] = None,
    arm_column: Annotated[str, typer.Option("--arm-column", help="Events column naming the arm.")] = "arm",
    outcome_column: Annotated[
        str, typer.Option("--outcome-column", help="Events column with the 0/1 outcome (1 = success).")
    ] = "outcome",
    unit_column: Annotated[
        str | None,
        typer.Option(
            "--unit-column",
            help="Analyse per key, not per exposure: the events column holding each event's key (e.g. key_hash, "
            "the hashed --sticky-key the servers log). One observation per key; a key seen in both arms is an error.",
        ),
    ] = None,
    control_arm: Annotated[
        str | None, typer.Option("--control-arm", help="Arm value of the control (default: the live color).")
    ] = None,
    treatment_arm: Annotated[
        str | None, typer.Option("--treatment-arm", help="Arm value of the treatment (default: the canary color).")
    ] = None,
    treatment_share: Annotated[
        float | None,
        typer.Option(
            "--treatment-share",
            help="Intended share of exposures in the treatment arm, for the sample-ratio check "
            "(default: the canary's traffic weight; 0.5 for named arms; unchecked for counts).",
        ),
    ] = None,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Act on the running canary: promote, reject (switch back) or leave it."),
    ] = False,
    target: Annotated[
        str, typer.Option("--target", help="Where the canary runs: local or kubernetes (with --events).")
    ] = "local",
    env: Annotated[str, typer.Option("--env", help="Environment of the canary: staging or production.")] = "staging",
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Kubernetes namespace (default: [tool.mlship.deploy]).")
    ] = None,
    approve: Annotated[bool, typer.Option("--approve", help="Approve acting on a production canary.")] = False,
    report_dir: Annotated[
        Path | None, typer.Option("--report-dir", help="Where abtest.json/.md go (default: .mlship/reports).")
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="One-sided significance level.")] = 0.05,
    power: Annotated[
        float,
        typer.Option("--power", help="Power the required n per arm is sized for."),
    ] = 0.8,
    mde: Annotated[float, typer.Option("--mde", help="Minimum detectable absolute effect.")] = 0.01,
    looks_done: Annotated[int, typer.Option("--look", help="Which interim look this is (1-based).")] = 1,
    max_looks: Annotated[int, typer.Option("--max-looks", help="Planned equal looks, <= 50 (1 = fixed).")] = 1,
    direction: Annotated[str, typer.Option("--direction", help="greater: success is good; less: bad.")] = "greater",
) -> None:
    """The abtest command (its help is ABTEST_HELP); long only for the option declarations typer reads."""
    if direction not in ("greater", "less"):
        raise typer.BadParameter(f"expected greater or less, got {direction!r}", param_hint="--direction")
    counts = _abtest_counts(control, treatment, events, apply)
    if unit_column is not None and events is None:
        raise typer.BadParameter("--unit-column analyses an events file: pass --events", param_hint="--unit-column")

    def action(settings: Settings) -> int:
        from mlship.monitoring.abtest_analysis import Arm, analyse, write_report  # noqa: PLC0415 - pandas/scipy: kept off `--help`

        design: dict[str, Any] = {
            "alpha": alpha,
            "power": power,
            "mde": mde,
            "looks_done": looks_done,
            "max_looks": max_looks,
            "direction": direction,
        }
        out = report_dir or settings.reports_path
        if counts is not None:
            (cs, cn), (ts, tn) = counts
            report = analyse(
                Arm("control", cs, cn), Arm("treatment", ts, tn), expected_treatment_share=treatment_share, **design
            )
            write_report(report, out)
        else:
            assert events is not None
            report = _abtest_events(
                settings,
                events,
                out,
                apply=apply,
                target=target,
                env=env,
                namespace=namespace,
                approve=approve,
                arm_column=arm_column,
                outcome_column=outcome_column,
                unit_column=unit_column,
                control_arm=control_arm,
                treatment_arm=treatment_arm,
                treatment_share=treatment_share,
                design=design,
            )
        _print_abtest(report)
        notify.canary(settings, report, applied=apply, env=env)
        return 1 if report.state in ("reject", "srm") else 0

    cli.run(ctx, action)


def _abtest_counts(
    control: str | None, treatment: str | None, events: Path | None, apply: bool
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Counts mode, events mode, or a usage error (exit 2) for a mix of both."""
    if events is not None:
        if control is not None or treatment is not None:
            raise typer.BadParameter("use either --events or --control/--treatment counts", param_hint="--events")
        return None
    if control is None or treatment is None:
        raise typer.BadParameter("pass --control S/N and --treatment S/N, or --events PATH", param_hint="--control")
    if apply:
        raise typer.BadParameter("--apply decides a canary from its events: pass --events", param_hint="--apply")
    return _counts(control, "--control"), _counts(treatment, "--treatment")


def _abtest_events(
    settings: Settings,
    events: Path,
    out: Path,
    *,
    apply: bool,
    target: str,
    env: str,
    namespace: str | None,
    approve: bool,
    control_arm: str | None,
    treatment_arm: str | None,
    **options: Any,
) -> AbReport:
    from mlship.monitoring.canary import decide_canary  # noqa: PLC0415 - pandas/scipy: kept off `--help`

    if not apply and control_arm is not None and treatment_arm is not None:
        return decide_canary(events, out, control_arm=control_arm, treatment_arm=treatment_arm, **options).report
    # the deploy stack is imported by the command that uses it, not by `mlship --help`
    from mlship.deploy.factory import controller  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`
    from mlship.deploy.options import require_approval  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

    if apply:
        require_approval(env, approve)
    with controller(settings, target, env, namespace) as ctl:
        outcome = decide_canary(
            events, out, ctl=ctl, apply=apply, control_arm=control_arm, treatment_arm=treatment_arm, **options
        )
    return outcome.report


def _arm(role: str, arm: Arm) -> str:
    """`control blue 40/400 (0.1000)`; the name is left out when it is the role itself."""
    name = "" if arm.name == role else f" {one_line(arm.name)}"  # from the events file: one line, no markup
    return f"{role}{name} {arm.successes}/{arm.n} ({arm.rate:.4f})"


def _print_abtest(report: AbReport) -> None:
    d = report.decision
    c, t = report.control, report.treatment
    out = cli.console()
    out.print(report.summary)
    out.print(
        f"{_arm('control', c)}, {_arm('treatment', t)}; "
        f"lift {report.lift:+.4f}, diff CI [{d.ci[0]:.4f}, {d.ci[1]:.4f}]; z={d.z:.3f}, p={d.p_value:.4g}, "
        f"boundary {d.boundary:.3f}; required n/arm {d.required_n}"
        + (f" at look {report.max_looks}" if report.max_looks > 1 else ""),
        markup=False,
    )
    if report.srm_p_value is not None:
        out.print(f"sample ratio: p={report.srm_p_value:.3g} ({'MISMATCH' if report.srm else 'ok'})")
    if report.action != "none":
        out.print(f"action: {report.action}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("drift")(drift)
    app.command("abtest", help=ABTEST_HELP)(abtest)
