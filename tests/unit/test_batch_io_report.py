"""The pieces of batch scoring that need no model: input listing, part names, staging, report statistics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlship.batch.io import Dataset, InputFile, list_inputs, part_name, split, storage_error
from mlship.batch.report import BINS, PartStats, Sample, coarse, quantile, verdict
from mlship.batch.run import Progress as _Progress
from mlship.errors import ConfigError, InfraError


def test_inputs_are_a_file_a_folder_or_a_glob_and_never_hidden_or_other_files(project: Path) -> None:
    (project / "in" / "2026" / "12").mkdir(parents=True)
    for name in ("in/a.csv", "in/2026/12/b.parquet", "in/2026/12/c.CSV", "in/notes.txt", "in/_SUCCESS",
                 "in/.hidden.csv", "in/_report/batch.csv"):  # fmt: skip
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x\n1\n")
    _, found = list_inputs("in")
    assert [i.relative for i in found] == ["2026/12/b.parquet", "2026/12/c.CSV", "a.csv"]
    assert found[0].uri == "in/2026/12/b.parquet"
    _, globbed = list_inputs("in/2026/*/*.parquet")
    assert [i.relative for i in globbed] == ["12/b.parquet"]
    _, single = list_inputs("in/a.csv")
    assert single[0].relative == "a.csv" and single[0].size == 4 and single[0].mtime_ns > 0
    with pytest.raises(ConfigError, match=re.escape("unsupported input notes.txt")):
        list_inputs("in/notes.txt")
    with pytest.raises(ConfigError, match=re.escape("no such file, or no .csv/.parquet files there")):
        list_inputs("in/none-*.csv")


def test_part_names_are_stable_readable_and_distinct() -> None:
    def inp(relative: str) -> InputFile:
        return InputFile(path=f"/x/{relative}", uri=relative, relative=relative, size=1, mtime_ns=1)

    a, b = part_name(inp("2026/12/a b.csv")), part_name(inp("2026-12/a b.csv"))
    assert a == part_name(inp("2026/12/a b.csv")) and a.startswith("part-2026-12-a-b-") and a.endswith(".parquet")
    assert a != b  # same readable stem, different inputs: the hash tells them apart


@pytest.mark.parametrize(
    ("spec", "message"),
    [("s3://", "bad S3 URI"), ("s3://A_B/x", "bad S3 URI"), ("gs://bucket/x", "unsupported URI scheme")],
)
def test_bad_uris_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split(spec)


def test_a_staged_write_that_fails_leaves_nothing_and_prepare_clears_what_a_kill_left(project: Path) -> None:
    out = Dataset("out")
    out.prepare()
    with pytest.raises(RuntimeError), out.staged("part-a.parquet") as stream:
        stream.write(b"half")
        raise RuntimeError("died mid-part")
    assert list((project / "out").iterdir()) == []
    assert out.write_bytes("_report/batch.md", b"# ok\n").endswith("out/_report/batch.md")
    left = project / "out" / ".part-b.parquet.0123456789abcdef0123456789abcdef.tmp"
    left.write_bytes(b"killed")
    theirs = project / "out" / ".someone-else.tmp"
    theirs.write_bytes(b"not ours")
    (project / "out" / "_SUCCESS").write_text("{}")
    out.prepare()
    assert not left.exists() and not (project / "out" / "_SUCCESS").exists() and theirs.exists()
    assert out.part_metadata("_report/batch.md") is None  # not Parquet: redone, not trusted


def test_quantiles_from_the_histogram_match_numpy_to_a_bin() -> None:
    rng = np.random.default_rng(0)
    scores = rng.beta(2, 5, 20_000)
    stats = PartStats()
    stats.add_scores(scores, pd.Series((scores >= 0.5).astype(int)))
    for q in (0.01, 0.5, 0.99):
        assert quantile(stats.hist, q) == pytest.approx(np.quantile(scores, q), abs=1 / BINS)
    assert sum(coarse(stats.hist)) == 20_000 and len(coarse(stats.hist)) == 20
    assert stats.classes == {"0": int((scores < 0.5).sum()), "1": int((scores >= 0.5).sum())}
    assert quantile(PartStats().hist, 0.5) is None


def test_part_stats_merge_and_survive_json() -> None:
    one = PartStats(rows=10, refused={"amount: bad": 2})
    one.add_scores(np.array([0.1, 0.9, np.nan]), pd.Series([0, 1, None], dtype="Int64"))
    two = PartStats.from_json(one.to_json())
    assert two == one
    two.merge(one)
    assert two.rows == 20 and two.refused == {"amount: bad": 4} and two.classes == {"0": 2, "1": 2}
    assert two.scored == 4 and two.bad_rows == 4 and sum(two.hist) == 4


def test_the_sample_is_bounded_and_uniform_over_chunks_of_any_size() -> None:
    sample = Sample(size=1000, seed=1)
    values = np.arange(50_000)
    for chunk in np.array_split(values, [10, 500, 20_000, 20_001]):  # very uneven chunks
        sample.add(pd.DataFrame({"v": chunk}))
    assert sample.frame is not None and len(sample.frame) == 1000 and sample.frame["v"].is_unique
    assert abs(sample.frame["v"].mean() - values.mean()) < 0.06 * values.mean()  # not biased to late chunks
    kept = sample.state()
    sample.add(pd.DataFrame({"v": np.arange(10**6, 10**6 + 5000)}))
    sample.restore(kept)
    assert sample.frame is not None and sample.frame["v"].max() < 50_000


@pytest.mark.parametrize(
    ("text", "kind", "words"),
    [  # the messages pyarrow's S3 client gives
        ("AWS Error NETWORK_CONNECTION during ListObjectsV2 operation: curlCode: 7, Could not connect", InfraError,
         "unreachable"),
        ("AWS Error ACCESS_DENIED during HeadObject operation: No response body.", InfraError, "access denied"),
        ("AWS Error UNKNOWN (HTTP status 503) during HeadObject operation", InfraError, "the object store failed"),
        ("AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation: The specified bucket does not exist",
         ConfigError, "no such bucket"),
        ("Path does not exist 'x'", ConfigError, "cannot list s3://b/x: Path does not exist"),
    ],
)  # fmt: skip
def test_storage_errors_map_to_the_exit_code_contract(text: str, kind: type, words: str) -> None:
    error = storage_error(OSError(text), "list s3://b/x")
    assert type(error) is kind and words in str(error) and "\n" not in str(error)


def test_progress_is_a_bar_on_a_terminal_and_a_line_per_part_in_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    inp = InputFile(path="/in/a.csv", uri="in/a.csv", relative="a.csv", size=1, mtime_ns=1)
    for tty in (True, False):
        with _Progress(2, tty) as progress:
            progress.rows(10)
            progress.part(1, inp, "part-a.parquet", "10 rows in 0.1 s")
            if tty:
                assert progress.bar is not None and progress.rows_task is not None
                assert progress.bar.tasks[progress.rows_task].completed == 10
            else:
                assert progress.bar is None
        assert "[1/2] in/a.csv -> part-a.parquet: 10 rows in 0.1 s" in capsys.readouterr().err
    with _Progress(1, False) as progress:  # one file: the summary line says it all
        progress.part(1, inp, "out.parquet", "10 rows in 0.1 s")
    assert capsys.readouterr().err == ""


def test_the_verdict_line_names_refusals_flags_and_drift_first() -> None:
    from mlship.data.synth import generate
    from mlship.monitoring.drift import compare
    from mlship.settings import Settings

    settings = Settings()
    ref, cur = generate(3000, seed=1), generate(3000, seed=2)
    same = compare(settings, ref, cur, ref_name="train", cur_name="batch")
    shifted = cur.assign(**{f: cur[f] * 3 + 5 for f in settings.numeric_features})
    drifted = compare(settings, ref, shifted, ref_name="train", cur_name="batch")
    one = compare(settings, ref, cur.assign(amount=cur["amount"] * 3), ref_name="train", cur_name="batch")
    stats = PartStats(rows=10, classes={"0": 9, "1": 1})
    assert verdict(stats, [], "refuse", same) == "OK: 10 rows scored; no input drift"
    assert verdict(stats, [], "refuse", None) == "OK: 10 rows scored; drift not computed"
    assert verdict(stats, [], "refuse", drifted).startswith("OK: 10 rows scored; input DRIFT in ")
    assert verdict(stats, [], "refuse", one) == "OK: 10 rows scored; drift in amount (below the dataset threshold)"
    bad = PartStats(rows=12, refused={"amount: missing": 2}, classes={"0": 10})
    assert verdict(bad, [], "flag", same).startswith("FLAGGED: 10 rows scored, 2 flagged as bad input (flag)")
    assert verdict(bad, ["in/x.csv"], "refuse", None).startswith("REFUSED: 2 rows in 1 part(s)")
