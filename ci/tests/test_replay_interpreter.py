"""The replay interpreter's own semantics, on the local Docker engine (marker `replay`).

Each test builds a small lazy chain with dagger-io, awaits it as module code would, and
checks what the engine would give: cached execs, a cache-buster that busts, ExecError on a
failing exec, secrets that never reach argv, layers, `docker inspect` or output, and an
unknown selection that fails the test instead of being skipped.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import anyio
import dagger
import pytest
from dagger import dag
from ml_pipeline import images
from replay import tier as replay_tier
from replay.interpreter import Terminal, UnknownSelection
from replay.tier import Tier

pytestmark = pytest.mark.replay
ANY = dagger.ReturnType.ANY


@pytest.fixture
def tier(request: pytest.FixtureRequest) -> Tier:
    return replay_tier.get(request.config)


def python() -> dagger.Container:
    return dag.container().from_(images.PYTHON)


def test_every_pinned_image_has_a_stand_in_and_the_table_names_it(tier: Tier) -> None:
    from replay import standins

    table = standins.render_table()
    for address in images.ALL.values():
        assert address in standins.by_address()
        assert address.split("@")[0] in table


def test_an_unknown_selection_fails_naming_it(tier: Tier) -> None:
    chain = python().with_user("nobody").with_exec(["true"])
    with pytest.raises(UnknownSelection, match=r"Container\.withUser"):
        tier.run(chain.sync)


def test_an_unknown_argument_fails_naming_it(tier: Tier) -> None:
    chain = python().with_exec(["true"], insecure_root_capabilities=True)
    with pytest.raises(UnknownSelection, match=r"Container\.withExec: argument"):
        tier.run(chain.sync)


def test_execs_are_cached_by_content_and_a_cache_buster_busts(tier: Tier) -> None:
    nonce = uuid.uuid4().hex  # a fresh chain, so the first run is never a cache hit

    def stamp(buster: str) -> dagger.Container:
        return (
            python()
            .with_env_variable("NONCE", nonce)
            .with_env_variable("CACHE_BUSTER", buster)
            .with_exec(["python3", "-c", "import time; print(time.time_ns())"])
        )

    run0 = tier.interp.execs_run
    first = tier.run(stamp("1").stdout)
    again = tier.run(stamp("1").stdout)
    busted = tier.run(stamp("2").stdout)
    assert first == again, "the same chain must come from the cache"
    assert busted != first, "a changed env var must re-run the exec"
    assert tier.interp.execs_run - run0 == 2


def test_a_failing_exec_raises_the_engines_exec_error(tier: Tier) -> None:
    chain = python().with_exec(["sh", "-c", "echo partial; echo 'it broke' >&2; exit 3"])
    with pytest.raises(dagger.ExecError) as info:
        tier.run(chain.stdout)
    err = info.value
    assert err.exit_code == 3
    assert err.stderr == "it broke"
    assert err.stdout == "partial"
    assert (
        str(err)
        == "process \"sh -c echo partial; echo 'it broke' >&2; exit 3\" did not complete successfully: exit code: 3"
    )


def test_expect_any_and_failure_keep_the_exit_code(tier: Tier) -> None:
    failing = python().with_exec(["sh", "-c", "exit 4"], expect=dagger.ReturnType.ANY)
    assert tier.run(failing.exit_code) == 4
    expected = python().with_exec(["sh", "-c", "exit 5"], expect=dagger.ReturnType.FAILURE)
    assert tier.run(expected.exit_code) == 5
    with pytest.raises(dagger.ExecError, match="FAILURE was expected"):
        tier.run(python().with_exec(["true"], expect=dagger.ReturnType.FAILURE).sync)


def test_files_and_directories_flow_between_chains(tier: Tier, tmp_path: Path) -> None:
    tree = dag.directory().with_new_file("a/b.txt", "hello\n").with_new_file("c.txt", "see\n")
    ctr = (
        python()
        .with_directory("/in", tree)
        .with_workdir("/in")
        .with_exec(["sh", "-c", "mkdir -p /out && cat a/b.txt c.txt > /out/both.txt && echo done"])
    )
    assert tier.run(ctr.stdout) == "done\n"
    assert tier.run(ctr.file("/out/both.txt").contents) == "hello\nsee\n"
    assert tier.run(ctr.directory("/in").entries) == ["a/", "c.txt"]
    exported = tier.run(lambda: ctr.directory("/out").export(str(tmp_path / "out")))
    assert (Path(exported) / "both.txt").read_text() == "hello\nsee\n"
    missing = ctr.file("/out/nope.txt")
    with pytest.raises(dagger.QueryError, match=r"nope\.txt"):
        tier.run(missing.contents)


def test_a_cache_volume_persists_between_execs_and_stays_out_of_layers(tier: Tier) -> None:
    key = f"mlship-replay-test-{uuid.uuid4().hex[:8]}"
    cache = dag.cache_volume(key)
    write = python().with_mounted_cache("/cache", cache).with_exec(["sh", "-c", "echo kept > /cache/x"])
    tier.run(write.sync)
    read = python().with_mounted_cache("/cache", cache).with_exec(["cat", "/cache/x"])
    no_cache = python().with_exec(["sh", "-c", "ls /cache 2>/dev/null | wc -l"])
    try:
        assert tier.run(read.stdout) == "kept\n"
        assert tier.run(no_cache.stdout) == "0\n"
    finally:
        from replay.interpreter import volume_name

        subprocess.run(["docker", "volume", "rm", "--force", volume_name(key)], capture_output=True, check=False)


def test_secrets_never_reach_argv_layers_inspect_or_output(tier: Tier, tmp_path: Path) -> None:
    token, kubeconfig = f"tok-{uuid.uuid4().hex}", f"kc-{uuid.uuid4().hex}"
    ctr = (
        python()
        .with_secret_variable("TOKEN", dag.set_secret("token", token))
        .with_mounted_secret("/root/.kube/config", dag.set_secret("kc", kubeconfig), mode=0o400)
        .with_exec(
            [
                "sh",
                "-c",
                'printf \'%s|\' "${#TOKEN}"; stat -c %a /root/.kube/config; echo "$TOKEN"; cat /root/.kube/config',
            ]
        )
    )
    out = tier.run(ctr.stdout)
    length, mode = out.splitlines()[0].split("|")
    assert int(length) == len(token)
    assert mode == "400"
    assert out.count("***") == 2 and token not in out and kubeconfig not in out, "output is scrubbed"
    image = tier.interp.tag(_exec_key(tier, ctr))  # the committed exec: its config (argv, env) and layers
    inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True).stdout
    assert token not in inspect and kubeconfig not in inspect
    saved = tmp_path / "image.tar"
    subprocess.run(["docker", "save", "--output", str(saved), image], check=True, capture_output=True)
    data = saved.read_bytes()
    assert token.encode() not in data and kubeconfig.encode() not in data
    for sidecar in (tier.interp.cache_dir / "exec").glob("*.json"):
        text = sidecar.read_text()
        assert token not in text and kubeconfig not in text


def _exec_key(tier: Tier, ctr: dagger.Container) -> str:
    value = tier.interp.evaluate(list(ctr._ctx.selections))
    assert value.fs is not None
    return str(value.fs.key)


def test_the_source_argument_honours_the_modules_ignore_patterns(tier: Tier, tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    for rel in ("pyproject.toml", "src/pkg/mod.py", "src/pkg/__pycache__/mod.pyc", ".venv/bin/python", ".git/HEAD"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "ci/sdk").mkdir(parents=True)
    (root / "ci/sdk/gen.py").write_text("x")
    source = replay_tier.source_argument(root)
    assert tier.run(source.entries) == ["ci/", "pyproject.toml", "src/"]
    assert tier.run(source.directory("src/pkg").entries) == ["mod.py"]
    assert tier.run(source.directory("ci").entries) == []


def test_the_module_loads_with_what_dagger_json_includes(tier: Tier) -> None:
    """Needs the git checkout (git decides .gitignore): skips with the tier where it skips (in a stage's container)."""
    files = replay_tier.module_files()
    assert "dagger.json" in files
    module = ("main", "constants", "stages", "release", "awaits", "images", "kubeconfig")
    for name in ("ci/pyproject.toml", "ci/uv.lock", *(f"ci/src/ml_pipeline/{m}.py" for m in module)):
        assert name in files
    assert not [f for f in files if f.startswith(("ci/sdk/", "ci/.venv/", "src/", ".venv/"))]
    config = json.loads((replay_tier.REPO / "dagger.json").read_text())
    assert config["source"] == "ci"


# ---- the engine's strictness (issue 22 item 1): each test fails on the kinder replay it replaced ----


def test_expect_any_is_0_to_127_and_192_to_255_a_signal_death_is_an_exec_error(tier: Tier) -> None:
    # core/container.go ReturnTypes.ReturnCodes (v0.21.8): a process killed by SIGKILL (the OOM
    # killer's 137) is no exit code any `expect` accepts; 254 is (the engine's returncodes_test).
    nonce = uuid.uuid4().hex
    killed = (
        python()
        .with_env_variable("NONCE", nonce)
        .with_exec(
            # the child is killed (PID 1 of a container ignores SIGKILL from inside); sh exits 128+9
            ["sh", "-c", "python3 -c 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'"],
            expect=ANY,
        )
    )
    with pytest.raises(dagger.ExecError) as info:
        tier.run(killed.exit_code)
    assert info.value.exit_code == 137
    with pytest.raises(dagger.ExecError):
        tier.run(python().with_exec(["sh", "-c", "exit 150"], expect=dagger.ReturnType.FAILURE).sync)
    assert tier.run(python().with_exec(["sh", "-c", "exit 254"], expect=ANY).exit_code) == 254
    assert tier.run(python().with_exec(["sh", "-c", "exit 127"], expect=ANY).exit_code) == 127


def test_with_directory_of_an_empty_directory_creates_it(tier: Tier) -> None:
    ctr = python().with_directory("/reports/empty", dag.directory()).with_exec(["test", "-d", "/reports/empty"])
    tier.run(ctr.sync)  # an ExecError (exit 1) when the directory was not made
    assert tier.run(ctr.directory("/reports/empty").entries) == []


def _without_a_shell() -> dagger.Container:
    """The python image with every shell removed, like a distroless or scratch-based image."""
    return python().with_exec(
        ["rm", "-f", "/bin/sh", "/usr/bin/sh", "/bin/dash", "/usr/bin/dash", "/bin/bash", "/usr/bin/bash"]
    )


def test_secret_variables_arrive_byte_exact_in_an_image_without_a_shell(tier: Tier) -> None:
    # core/container_exec.go Container.secretEnvValues: `NAME=<plaintext>` as is, no shell involved
    values = {"TOKEN": f"tok-{uuid.uuid4().hex}\n", "MULTI": f"a b\n\n{uuid.uuid4().hex}  \n\n", "EMPTY": ""}
    ctr = _without_a_shell()
    for name, value in values.items():
        ctr = ctr.with_secret_variable(name, dag.set_secret(name.lower(), value))
    probe = (
        "import hashlib, os, shutil; assert shutil.which('sh') is None, 'a shell is left';"
        "print(*(f'{n}:{len(os.environ[n])}:{hashlib.sha256(os.environ[n].encode()).hexdigest()}'"
        " for n in ('TOKEN', 'MULTI', 'EMPTY')))"
    )
    out = tier.run(ctr.with_exec(["python3", "-c", probe]).stdout).split()
    expected = [f"{n}:{len(v)}:{hashlib.sha256(v.encode()).hexdigest()}" for n, v in values.items()]
    assert out == expected


def test_an_exec_whose_binary_is_missing_fails_to_start_not_with_an_exit_code(tier: Tier) -> None:
    ctr = python().with_secret_variable("TOKEN", dag.set_secret("t", "x")).with_exec(["no-such-binary"], expect=ANY)
    with pytest.raises(RuntimeError, match="could not start"):
        tier.run(ctr.exit_code)


def _overlap(a: Terminal, b: Terminal) -> bool:
    return a.started < b.ended and b.started < a.ended


def test_sibling_awaits_run_concurrently_and_a_shared_node_runs_once(tier: Tier) -> None:
    nonce = uuid.uuid4().hex
    shared = python().with_env_variable("NONCE", nonce).with_exec(["sh", "-c", "date +%s%N > /stamp"])
    children = [shared.with_exec(["sh", "-c", f"sleep 3; cat /stamp; echo {i}"]) for i in range(2)]
    outputs: dict[int, str] = {}

    async def one(i: int) -> None:
        outputs[i] = await children[i].stdout()

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(2):
                tg.start_soon(one, i)

    run0, first = tier.interp.execs_run, len(tier.interp.terminals)
    tier.run(both)
    a, b = tier.interp.terminals[first:]
    assert _overlap(a, b), f"the two awaits ran one after the other: {a} / {b}"
    assert tier.interp.execs_run - run0 == 3, "the shared exec ran once, each child once"
    stamps = {outputs[i].splitlines()[0] for i in range(2)}
    assert len(stamps) == 1, outputs


def test_a_locked_cache_volume_makes_concurrent_execs_take_turns(tier: Tier) -> None:
    key = f"mlship-replay-test-{uuid.uuid4().hex[:8]}"
    cache = dag.cache_volume(key)
    # each exec claims the volume with mkdir (atomic) and fails if another holds it
    claim = "mkdir /cache/busy || exit 9; sleep 2; rmdir /cache/busy"
    ctrs = [
        python()
        .with_env_variable("I", str(i))
        .with_mounted_cache("/cache", cache, sharing=dagger.CacheSharingMode.LOCKED)
        .with_exec(["sh", "-c", claim])
        for i in range(2)
    ]

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            for ctr in ctrs:
                tg.start_soon(ctr.sync)

    try:
        tier.run(both)  # an ExecError (exit 9) if the two had held the volume at once
    finally:
        from replay.interpreter import volume_name

        subprocess.run(["docker", "volume", "rm", "--force", volume_name(key)], capture_output=True, check=False)
