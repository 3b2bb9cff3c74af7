"""`mlship abtest --events`: counts from a file, the full report, and one clear line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.errors import ConfigError
from mlship.monitoring.abtest_analysis import Arm, analyse, count_arms, read_events
from mlship.monitoring.canary import decide_canary

register_all(app)
runner = CliRunner()


def events_frame(arms: dict[str, tuple[int, int]], seed: int = 0) -> pd.DataFrame:
    """Exactly `successes` ones among `n` rows per arm, shuffled like a real log."""
    rows = [(arm, int(i < s)) for arm, (s, n) in arms.items() for i in range(n)]
    frame = pd.DataFrame(rows, columns=["arm", "outcome"])
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def abtest(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["abtest", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_events_file_in_every_format_gives_the_same_counts_and_report(project: Path, suffix: str) -> None:
    frame = events_frame({"A": (1000, 10_000), "B": (1200, 10_000)})
    path = project / f"events{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    code, out = abtest("--events", str(path), "--control-arm", "A", "--treatment-arm", "B", "--mde", "0.02")
    assert code == 0, out
    assert out.startswith("promote:") and "1000/10000" in out and "1200/10000" in out
    report = json.loads((project / ".mlship" / "reports" / "abtest.json").read_text())
    assert report["state"] == "promote" and report["action"] == "none"
    assert report["control"] == {"arm": "A", "successes": 1000, "n": 10000, "rate": 0.1}
    assert report["lift"] == pytest.approx(0.02)
    assert report["lift_ci"][0] > 0 and report["p_value"] < 0.001
    assert report["required_n_per_arm"] == 3026 and report["need_per_arm"] == 0
    assert report["srm"]["mismatch"] is False and report["srm"]["expected_treatment_share"] == 0.5
    md = (project / ".mlship" / "reports" / "abtest.md").read_text()
    assert md.startswith("# A/B decision: promote") and "| A | control | 1000 | 10000 |" in md


def test_custom_columns_bool_outcome_and_a_worse_treatment_is_rejected(project: Path) -> None:
    frame = events_frame({"v1": (600, 2000), "v2": (480, 2000)}).rename(columns={"arm": "model", "outcome": "fraud"})
    frame["fraud"] = frame["fraud"].astype(bool)
    frame.to_parquet("ev.parquet")
    code, out = abtest(
        "--events", "ev.parquet", "--arm-column", "model", "--outcome-column", "fraud",
        "--control-arm", "v1", "--treatment-arm", "v2", "--mde", "0.05", "--report-dir", "rep",
    )  # fmt: skip
    assert code == 1, out
    assert out.startswith("reject:") and json.loads(Path("rep/abtest.json").read_text())["state"] == "reject"


def test_too_few_events_is_inconclusive_and_says_how_many_more(project: Path) -> None:
    events_frame({"A": (10, 100), "B": (14, 100)}).to_csv("ev.csv", index=False)
    code, out = abtest("--events", "ev.csv", "--control-arm", "A", "--treatment-arm", "B", "--mde", "0.02")
    assert code == 0
    need = json.loads(Path(".mlship/reports/abtest.json").read_text())["need_per_arm"]
    assert need == 3026 - 100
    assert f"inconclusive: keep collecting, need {need} more per arm" in out


def test_sample_ratio_mismatch_refuses_to_decide(project: Path) -> None:
    # B is far better, but it got 40% of the events where 50% was intended: no decision.
    events_frame({"A": (600, 6000), "B": (800, 4000)}).to_csv("ev.csv", index=False)
    code, out = abtest("--events", "ev.csv", "--control-arm", "A", "--treatment-arm", "B", "--mde", "0.02")
    assert code == 1
    assert out.startswith("sample ratio mismatch: treatment got 40.0% of events, expected 50.0%")
    report = json.loads(Path(".mlship/reports/abtest.json").read_text())
    assert report["state"] == "srm" and report["test_decision"] == "promote" and report["srm"]["p_value"] < 0.001
    # The same counts with the intended 40% split are fine.
    code, out = abtest(
        "--events", "ev.csv", "--control-arm", "A", "--treatment-arm", "B", "--mde", "0.02", "--treatment-share", "0.4"
    )
    assert code == 0 and out.startswith("promote:")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "content", "args", "message"),
    [
        ("ev.csv", "arm,result\nA,1\nB,0\n", [], "has no column 'outcome'"),
        ("ev.csv", "arm,outcome\nA,1\nB,2\nB,0.5\n", [], "column 'outcome' must be 0/1, found 2 other values"),
        ("ev.csv", "arm,outcome\nA,1\nB,yes\n", [], "must be 0/1"),
        ("ev.csv", "arm,outcome\nA,1\nB,\n", [], "must be 0/1"),
        ("ev.csv", "arm,outcome\nA,1\nB,0\nC,1\n", [], "unknown arms ['C']"),
        ("ev.csv", "arm,outcome\nA,1\nA,0\n", [], "no events for arm 'B'"),
        ("ev.csv", "arm,outcome\n,1\nB,0\n", [], "rows have no 'arm'"),
        ("ev.csv", "arm,outcome\n", [], "has no events"),
        ("ev.csv", "", [], "is empty"),
        ("ev.jsonl", "", [], "has no events"),
        ("ev.jsonl", "{not json\n", [], "cannot read"),
        ("ev.txt", "arm,outcome\n", [], "unsupported file type"),
        ("ev.csv", "arm,outcome\nA,1\nB,0\n", ["--treatment-arm", "A"], "control and treatment are the same arm"),
        ("ev.csv", "arm,outcome\nA,1\nB,0\n", ["--alpha", "0.7"], "invalid design"),
        ("ev.csv", "arm,outcome\nA,1\nB,0\n", ["--look", "3", "--max-looks", "2"], "out of range"),
        ("ev.csv", "arm,outcome\nA,1\nB,0\n", ["--treatment-share", "1.5"], "treatment share 1.5 is out of range"),
    ],
)
def test_bad_events_exit_2_with_one_line(project: Path, name: str, content: str, args: list[str], message: str) -> None:
    path = _write(project / name, content)
    code, out = abtest("--events", str(path), "--control-arm", "A", "--treatment-arm", "B", *args)
    assert code == 2, out
    assert message in out and "Traceback" not in out
    # One error line; the project has no [tool.mlship], so the defaults note may stand before it.
    lines = [line for line in out.strip().splitlines() if not line.startswith("mlship: note: ")]
    assert len(lines) == 1 and lines[0].startswith("mlship: error: "), out
    assert not (project / ".mlship" / "reports" / "abtest.json").exists()


def test_missing_events_file_and_mixed_modes_are_usage_errors(project: Path) -> None:
    code, out = abtest("--events", "nope.jsonl", "--control-arm", "A", "--treatment-arm", "B")
    assert code == 2 and "does not exist" in out
    code, out = abtest("--events", "nope.csv", "--control-arm", "A", "--treatment-arm", "B")
    assert code == 2 and "does not exist" in out
    assert abtest("--events", "x.csv", "--control", "1/2", "--treatment", "1/2")[0] == 2
    assert abtest("--control", "1/2")[0] == 2
    assert abtest("--control", "1/2", "--treatment", "1/2", "--direction", "up")[0] == 2
    assert abtest("--control", "1/2", "--treatment", "1/2", "--apply")[0] == 2
    _write(project / "ev.csv", "arm,outcome\nA,1\nB,0\n")
    code, out = abtest("--events", "ev.csv", "--control-arm", "A")
    assert code == 2 and "pass both --control-arm and --treatment-arm" in out


def test_arms_inferred_from_the_deployment_need_a_running_canary(project: Path) -> None:
    _write(project / "ev.csv", "arm,outcome\nblue,1\ngreen,0\n")
    code, out = abtest("--events", "ev.csv")
    assert code == 2 and "no canary is running in staging" in out
    code, out = abtest("--events", "ev.csv", "--apply")
    assert code == 2 and "no canary is running in staging" in out
    code, out = abtest("--events", "ev.csv", "--apply", "--env", "production")
    assert code == 2 and "needs approval" in out


def test_counts_mode_still_works_and_now_writes_the_report(project: Path) -> None:
    code, out = abtest("--control", "100/20000", "--treatment", "400/20000", "--mde", "0.01")
    assert code == 0 and out.startswith("promote:")
    report = json.loads(Path(".mlship/reports/abtest.json").read_text())
    assert report["control"]["n"] == 20000 and report["srm"]["p_value"] is None
    assert "sample-ratio-mismatch check skipped" in report["notes"][0]


def test_library_checks() -> None:
    frame = pd.DataFrame({"arm": ["A", "B", "B"], "outcome": [1, 0, 1]})
    assert count_arms(frame, "A", "B") == (Arm("A", 1, 1), Arm("B", 1, 2))
    with pytest.raises(ConfigError, match="needs a deployment"):
        decide_canary(Path("x.csv"), Path("r"), apply=True)
    with pytest.raises(ConfigError, match="no arms given"):
        decide_canary(Path("x.csv"), Path("r"))
    report = analyse(Arm("A", 0, 50), Arm("B", 5, 50), mde=0.05, looks_done=1, max_looks=3)
    assert report.relative_lift is None and report.state == "inconclusive"
    # sequential: the next step is look 2 of 3, at two thirds of the plan's maximum n
    assert report.next_look_n == -(-report.decision.required_n * 2 // 3)
    assert report.need_per_arm == report.next_look_n - 50
    assert f"need {report.need_per_arm} more per arm for look 2/3 (planned at {report.next_look_n} per arm)" in (
        report.summary
    )
    assert "is below the boundary" in report.summary
    worse = analyse(Arm("A", 500, 1000), Arm("B", 100, 1000), looks_done=1, max_looks=3)
    assert worse.state == "reject" and worse.need_per_arm > 0
    mid = analyse(Arm("A", 100, 1000), Arm("B", 105, 1000), mde=0.3, looks_done=1, max_looks=3)
    assert mid.need_per_arm == 0 and "collect until the next look" in mid.summary
    assert np.isnan(Arm("A", 0, 0).rate)
    with pytest.raises(ConfigError, match="51 planned looks is more than 50"):
        analyse(Arm("A", 1, 10), Arm("B", 1, 10), looks_done=1, max_looks=51)


def test_read_events_returns_arms_as_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "ev.csv", "arm,outcome\n1,1\n2,0\n")
    events = read_events(path)
    assert list(events["arm"]) == ["1", "2"] and list(events["outcome"]) == [1, 0]


def test_an_unreadable_traffic_split_blocks_apply_but_not_the_analysis(project: Path) -> None:
    from mlship.deploy.controller import Controller
    from mlship.deploy.release import DeployState, Release
    from mlship.deploy.targets.local import LocalTarget
    from mlship.errors import InfraError
    from mlship.settings import Settings

    settings = Settings(root=project)
    target = LocalTarget(settings.state_path / "deploy" / "staging", port=1)  # no router: the split is unknown
    ctl = Controller(settings, target, "staging")
    release = Release(ref="r", uri="r", name="card-fraud", version="2")
    ctl.store.save(
        DeployState("staging", live="blue", colors={"blue": release, "green": release.with_(outcome="canary")})
    )
    events = events_frame({"blue": (100, 1000), "green": (150, 1000)})
    events.to_csv("ev.csv", index=False)
    with pytest.raises(InfraError, match="cannot read the canary's traffic split on local"):
        decide_canary(Path("ev.csv"), Path("rep"), ctl=ctl, apply=True, design={"mde": 0.05})
    assert not Path("rep/abtest.json").exists()
    looked = decide_canary(Path("ev.csv"), Path("rep"), ctl=ctl, design={"mde": 0.05}).report
    assert looked.state == "promote" and looked.srm_p_value is None and looked.action == "none"


def test_hostile_arm_names_are_escaped_in_the_report_and_printed_as_text(project: Path) -> None:
    """Arm names come from the events file: a `|`, a newline or HTML cannot break abtest.md, nor markup the console."""
    control, treatment = "<script>alert(1)</script>", "b|x\n# Pwned [/bold]"
    events_frame({control: (1000, 10_000), treatment: (1200, 10_000)}).to_parquet("hostile.parquet")
    code, out = abtest(
        "--events", "hostile.parquet", "--control-arm", control, "--treatment-arm", treatment, "--mde", "0.02"
    )  # fmt: skip
    assert code == 0, out
    assert f"control {control} 1000/10000" in out and "treatment b|x\\n# Pwned [/bold] 1200/10000" in out
    md = (project / ".mlship" / "reports" / "abtest.md").read_text()
    assert "| &lt;script&gt;alert(1)&lt;/script&gt; | control | 1000 | 10000 |" in md
    assert "| b\\|x\\n# Pwned [/bold] | treatment | 1200 | 10000 |" in md
    assert "<script>" not in md and not any(line.startswith("# Pwned") for line in md.splitlines())
    report = json.loads((project / ".mlship" / "reports" / "abtest.json").read_text())
    assert report["control"]["arm"] == control and report["treatment"]["arm"] == treatment
