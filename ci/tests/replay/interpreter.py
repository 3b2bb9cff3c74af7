"""Execute a lazy Dagger chain, selection by selection, on the local Docker engine.

`Interpreter.evaluate(selections)` walks the `Field`s a dagger-io object recorded (the
same data the GraphQL query is built from) and gives each the meaning the engine gives
it. Object arguments (`source.file(...)`, `ctr.directory(...)`, secrets, cache volumes)
are chains too and are evaluated the same way. A selection or argument the replay does
not implement raises `UnknownSelection`: never a silent skip.

Exec results are cached by content key (parent key + argv + env + workdir + mounts +
secret HMACs) in images tagged `<namespace>:<key>` plus a JSON sidecar with the exec's
output, so a chain that starts with the same `_base()` is evaluated once, across
sessions like the engine's cache; any change of input, a cache-buster env var included,
is a new key. Failed execs are never cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dagger
import gql
from dagger._exceptions import QueryErrorValue

from replay import dockerops
from replay.standins import StandIn
from replay.values import (
    CacheVolume,
    Config,
    ContainerValue,
    DirValue,
    ExecResult,
    FileValue,
    FsNode,
    HostService,
    HostValue,
    SecretValue,
    ServiceValue,
    _join,
    copy_filtered,
    digest_of,
    tree_digest,
)

# Secret variables: a static launcher (secret_env_launcher.c) and one file per variable,
# bind-mounted under /dev, which is a tmpfs of the running container: no mount stub reaches
# a committed layer. The launcher sets each variable to its file's exact bytes and execs the
# argv: values reach the process environment only, never docker's argv, the container
# config or a layer, and the image needs no shell (the engine: core/container_exec.go
# Container.secretEnvValues appends `NAME=<plaintext>` to the executor's env, v0.21.8).
LAUNCHER_DIR = "/dev/.mlship-replay"
LAUNCHER = f"{LAUNCHER_DIR}/launcher"
SECRET_ENV_DIR = f"{LAUNCHER_DIR}/env"
LAUNCHER_SOURCE = Path(__file__).with_name("secret_env_launcher.c")
LAUNCHER_MARKER = "mlship-replay-launcher: cannot start"


# Part of every exec's cache key: bump it when how an exec runs changes (exit codes accepted,
# how secrets arrive), so no result cached under the old meaning is reused, as a new engine
# version starts a new cache.
EXEC_SEMANTICS = "engine-strict-2"


def valid_exit_codes(expect: str) -> range | tuple[range, ...]:
    """The exit codes an exec may end with and still succeed, per `expect`.

    dagger/dagger v0.21.8 core/container.go ReturnTypes.ReturnCodes (and the SDK's
    ReturnType docstrings in dagger/client/gen.py): SUCCESS = 0; FAILURE = 1–127 and
    192–255; ANY = 0–127 and 192–255. 128–191 are deaths by a signal (137 is the OOM
    killer's SIGKILL): no `expect` accepts them, the exec fails with ExecError
    (core/container_exec.go sets executor.Meta.ValidExitCodes from this list).
    """
    return {
        "SUCCESS": (range(0, 1),),
        "FAILURE": (range(1, 128), range(192, 256)),
        "ANY": (range(0, 128), range(192, 256)),
    }[expect]


def exit_code_ok(expect: str, code: int) -> bool:
    return any(code in codes for codes in valid_exit_codes(expect))


class UnknownSelection(NotImplementedError):
    """A selection (or one of its arguments) the replay does not know: the test must fail on it."""


class _Root:
    """The Query root a chain starts from."""


ROOT = _Root()
_OPS: dict[tuple[str, str], Callable[..., Any]] = {}


def op(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a handler for the GraphQL field `name` on values of type `kind`."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _OPS[(kind, name)] = fn
        return fn

    return register


def _kind(value: Any) -> str:
    return {
        _Root: "Query",
        ContainerValue: "Container",
        DirValue: "Directory",
        FileValue: "File",
        HostValue: "Host",
        ServiceValue: "Service",
        HostService: "Service",
        CacheVolume: "CacheVolume",
        SecretValue: "Secret",
    }.get(type(value), type(value).__name__)


def _request() -> gql.GraphQLRequest:
    return gql.GraphQLRequest("query { replay }")


def exec_error(cmd: list[str], exit_code: int, stdout: str, stderr: str, message: str = "") -> dagger.ExecError:
    """The engine's ExecError (same class, same extensions) for a failed exec."""
    text = message or f'process "{" ".join(cmd)}" did not complete successfully: exit code: {exit_code}'
    ext = {"_type": "EXEC_ERROR", "cmd": cmd, "exitCode": exit_code, "stdout": stdout, "stderr": stderr}
    err = dagger.QueryError([QueryErrorValue(text, extensions=ext)], _request())
    assert isinstance(err, dagger.ExecError)
    return err


def query_error(message: str) -> dagger.QueryError:
    """Any other engine-side failure (missing path, failed build), as the SDK raises it."""
    return dagger.QueryError([QueryErrorValue(message)], _request())


@dataclass
class Terminal:
    """One awaited leaf (`sync`, `stdout`, `entries`, `export`, `publish`…): what it cost, and when.

    `started`/`ended` are wall-clock times (time.time()), so awaits that ran side by side show
    overlapping intervals; `execs_run`/`execs_cached` count every exec of the interpreter in
    that interval (with concurrent awaits, theirs too).
    """

    leaf: str
    label: str
    seconds: float
    execs_run: int
    execs_cached: int
    started: float = 0.0
    ended: float = 0.0


@dataclass
class Interpreter:
    """Evaluates chains; holds the stand-in table, the staging area and the exec cache."""

    workdir: Path
    standins: dict[str, StandIn]
    ensure_standin: Callable[[StandIn], str]
    namespace: str = "mlship-replay-state"
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "mlship-replay")
    terminals: list[Terminal] = field(default_factory=list)
    substitutions: dict[str, str] = field(default_factory=dict)
    execs_run: int = 0
    execs_cached: int = 0
    _services: list[str] = field(default_factory=list)
    _host_dirs: dict[tuple[Any, ...], tuple[tuple[Any, ...], DirValue]] = field(default_factory=dict)
    _hmac_key: bytes = b""
    # Awaits run on worker threads, side by side (replay/engine.py): one lock per content key
    # makes a node that two chains share run once, the other waiting for its result, as the
    # engine's solver shares an identical vertex in flight (buildkit solver/jobs.go, one
    # vertex per digest); LOCKED cache volumes take one lock per volume.
    _tunnels: dict[int, _Forwarder] = field(default_factory=dict)
    # Host paths bind-mounted into every exec at the same path (host, container, writable): how a
    # scenario reaches a stand-in the engine would reach over the network (the kubectl double's
    # cluster is a state file). Empty but in the release scenario; part of an exec's cache key.
    exec_mounts: tuple[tuple[str, str, bool], ...] = ()
    # Every time output had to be scrubbed: (the exec's argv head, the secret's name). The engine
    # scrubs as silently; a test asserts nothing printed a secret in the first place.
    scrubbed: list[tuple[str, str]] = field(default_factory=list)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)
    _count_guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        (self.workdir / "blobs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "dirs").mkdir(parents=True, exist_ok=True)
        (self.cache_dir / "exec").mkdir(parents=True, exist_ok=True)
        key_file = self.cache_dir / "hmac.key"
        if not key_file.exists():
            key_file.write_bytes(secrets.token_bytes(32))
            key_file.chmod(0o600)
        self._hmac_key = key_file.read_bytes()

    # ---- walking ----

    def evaluate(self, selections: list[Any]) -> Any:
        value: Any = ROOT
        for sel in selections:
            value = self.apply(value, sel.name, dict(sel.args))
        return value

    def apply(self, value: Any, name: str, args: dict[str, Any]) -> Any:
        kind = _kind(value)
        handler = _OPS.get((kind, name))
        if handler is None:
            raise UnknownSelection(f"{kind}.{name}: not replayed (add it to ci/tests/replay/interpreter.py)")
        resolved = {k: self.arg(v) for k, v in args.items()}
        try:
            return handler(self, value, **resolved)
        except TypeError as exc:
            if "unexpected keyword argument" in str(exc):
                raise UnknownSelection(f"{kind}.{name}: argument not replayed ({exc})") from exc
            raise

    def arg(self, value: Any) -> Any:
        if hasattr(value, "_ctx"):
            return self.evaluate(list(value._ctx.selections))
        if isinstance(value, list):
            return [self.arg(v) for v in value]
        return value

    def terminal(self, selections: list[Any]) -> Any:
        """Evaluate an awaited chain and record its cost and its interval (the per-stage timings)."""
        run0, cached0, start, wall = self.execs_run, self.execs_cached, time.monotonic(), time.time()
        try:
            return self.evaluate(selections)
        finally:
            self.terminals.append(
                Terminal(
                    selections[-1].name,
                    _label(selections),
                    round(time.monotonic() - start, 2),
                    self.execs_run - run0,
                    self.execs_cached - cached0,
                    wall,
                    time.time(),
                )
            )

    def lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def _count(self, ran: int = 0, cached: int = 0) -> None:
        with self._count_guard:
            self.execs_run += ran
            self.execs_cached += cached

    def launcher(self) -> Path:
        """The static secret-variable launcher, compiled from its source once (cached by its hash)."""
        source = LAUNCHER_SOURCE.read_bytes()
        path = self.cache_dir / f"launcher-{hashlib.sha256(source).hexdigest()[:16]}"
        with self.lock_for("launcher"):
            if not path.exists():
                tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
                try:
                    proc = subprocess.run(
                        ["gcc", "-static", "-O2", "-o", str(tmp), str(LAUNCHER_SOURCE)],
                        capture_output=True,
                        text=True,
                        timeout=120,
                        check=False,
                    )
                except FileNotFoundError as exc:
                    msg = "the replay's secret launcher needs gcc (apt-get install gcc libc6-dev)"
                    raise RuntimeError(msg) from exc
                if proc.returncode != 0:
                    raise RuntimeError(f"the secret launcher did not compile: {proc.stderr.strip()[-2000:]}")
                tmp.replace(path)
        return path

    # ---- staging ----

    def _stage_dir(self, fill: Callable[[Path], None]) -> DirValue:
        tmp = self.workdir / "dirs" / f"tmp-{secrets.token_hex(8)}"
        tmp.mkdir()
        fill(tmp)
        digest = tree_digest(tmp)
        final = self.workdir / "dirs" / digest
        if final.exists():
            shutil.rmtree(tmp)
        else:
            try:
                tmp.rename(final)
            except OSError:  # a concurrent await staged the same content first: same digest, same tree
                shutil.rmtree(tmp)
        return DirValue(final, digest)

    def _stage_file(self, data: bytes, mode: int, name: str) -> FileValue:
        h = hashlib.sha256(data).hexdigest()
        path = self.workdir / "blobs" / f"{h}-{mode:o}"
        if not path.exists():
            tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
            tmp.write_bytes(data)
            tmp.chmod(mode)
            tmp.replace(path)  # atomic: a concurrent await never reads a half-written blob
        return FileValue(path, digest_of("file", h, mode), mode, name)

    def secret_mac(self, secret: SecretValue) -> str:
        return hmac.new(self._hmac_key, secret.plaintext.encode(), hashlib.sha256).hexdigest()

    def redact(self, text: str, config: Config, argv: tuple[str, ...] = ()) -> str:
        """The engine scrubs secret values from output; so does the replay.

        dagger/dagger v0.21.8 engine/engineutil/secret_scrub.go NewSecretScrubReader: every
        non-empty secret of the exec (variables and mounted files) and, when it differs, its
        whitespace-trimmed form become "***".
        """
        named = [(n, s.plaintext) for n, s in config.secret_env] + [(p, s.plaintext) for p, s, _ in config.secret_files]
        forms = {form: name for name, v in named for form in (v, v.strip()) if form}
        for form in sorted(forms, key=len, reverse=True):
            if form in text:
                with self._count_guard:
                    self.scrubbed.append((" ".join(argv[:3]), forms[form]))
                text = text.replace(form, "***")
        return text

    # ---- materialising containers ----

    def tag(self, key: str) -> str:
        return f"{self.namespace}:{key[:48]}"

    def materialize(self, node: FsNode) -> str:
        """The image id of a filesystem node, from cache or made now (parents first)."""
        if node.image_id is not None:
            return node.image_id
        with self.lock_for(node.key):
            return self._materialize(node)

    def _materialize(self, node: FsNode) -> str:
        if node.image_id is not None:
            return node.image_id
        cached = dockerops.image_id(self.tag(node.key))
        if cached is not None and node.op[0] == "exec":
            sidecar = self.cache_dir / "exec" / f"{node.key}.json"
            if sidecar.exists():
                data = json.loads(sidecar.read_text())
                node.result = ExecResult(data["stdout"], data["stderr"], data["exit_code"])
                node.image_id = cached
                self._count(cached=1)
                return cached
        elif cached is not None:
            node.image_id = cached
            return cached
        if node.op[0] == "files":
            self._apply_files(node)
        elif node.op[0] == "exec":
            self._run_exec(node)
        else:
            raise RuntimeError(f"node {node.op[0]} has no image")
        assert node.image_id is not None
        return node.image_id

    def _apply_files(self, node: FsNode) -> None:
        """Consecutive file operations applied in one created container and one commit."""
        run: list[FsNode] = []
        cur: FsNode | None = node
        while cur is not None and cur.op[0] == "files" and cur.image_id is None:
            if cur is not node and dockerops.image_id(self.tag(cur.key)) is not None:
                break
            run.append(cur)
            cur = cur.parent
        assert cur is not None, "a file operation needs a container below it"
        base = self.materialize(cur)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for step in reversed(run):
                for entry in step.op[1]:
                    _add_entry(tar, entry)
        with dockerops.created(base) as cid:
            dockerops.copy_in(cid, buf.getvalue())
            node.image_id = dockerops.commit(cid, self.tag(node.key))

    def _run_exec(self, node: FsNode) -> None:
        spec: ExecSpec = node.op[1]
        assert node.parent is not None
        image = self.materialize(node.parent)
        argv = list(spec.argv)
        with dockerops.secret_dir() as sdir:
            args = ["run", "--name", dockerops.name("exec"), "--network", "bridge"]
            for key, value in spec.config.env:
                args += ["--env", f"{key}={value}"]
            args += ["--workdir", spec.config.workdir or "/"]
            if spec.config.user:
                args += ["--user", spec.config.user]
            for path, cache, _sharing in spec.config.caches:
                args += ["--volume", f"{volume_name(cache)}:{path}"]
            for path in spec.config.temps:
                args += ["--tmpfs", path]
            for host_path, path, writable in self.exec_mounts:
                args += ["--mount", f"type=bind,src={host_path},dst={path}" + ("" if writable else ",readonly")]
            for alias, svc in spec.config.bindings:
                args += ["--add-host", f"{alias}:{self.host_tunnel(svc)}"]
            for i, (path, secret, mode) in enumerate(spec.config.secret_files):
                host = sdir / f"file{i}"
                host.write_text(secret.plaintext)
                host.chmod(mode)
                args += ["--mount", f"type=bind,src={host},dst={path},readonly"]
            if spec.config.secret_env:
                env_dir = sdir / "env"
                env_dir.mkdir(mode=0o700)
                for name, secret in spec.config.secret_env:
                    (env_dir / name).write_bytes(secret.plaintext.encode())
                    (env_dir / name).chmod(0o600)
                args += ["--mount", f"type=bind,src={env_dir},dst={SECRET_ENV_DIR},readonly"]
                args += ["--mount", f"type=bind,src={self.launcher()},dst={LAUNCHER},readonly"]
                argv = [LAUNCHER, *argv]
            if spec.stdin:
                args.append("--interactive")
            args += ["--entrypoint", argv[0], image, *argv[1:]]
            container = args[2]
            locked = [self.lock_for(f"volume:{c}") for _p, c, m in sorted(spec.config.caches) if m == "LOCKED"]
            try:
                with contextlib.ExitStack() as stack:
                    for lock in locked:  # sorted by path: two execs never wait on each other in a cycle
                        stack.enter_context(lock)
                    proc = subprocess.run(
                        ["docker", *args],
                        input=spec.stdin.encode() if spec.stdin else None,
                        capture_output=True,
                        timeout=3600,
                        check=False,
                    )
                self._count(ran=1)
                stdout = self.redact(proc.stdout.decode(errors="replace"), spec.config, spec.argv)
                stderr = self.redact(proc.stderr.decode(errors="replace"), spec.config, spec.argv)
                started = _started(container)
                if proc.returncode == 125 and not started:
                    raise RuntimeError(f"docker could not start exec {spec.argv}: {stderr.strip()[-2000:]}")
                code = proc.returncode
                if code == 125 and LAUNCHER_MARKER in stderr:
                    raise RuntimeError(f"exec {spec.argv} could not start: {stderr.strip()[-2000:]}")
                if not exit_code_ok(spec.expect, code):
                    message = ""
                    if spec.expect == "FAILURE" and code == 0:
                        message = f'process "{" ".join(spec.argv)}" succeeded but FAILURE was expected: exit code: 0'
                    raise exec_error(list(spec.argv), code, stdout.strip(), stderr.strip(), message)
                if spec.redirect_stdout or spec.redirect_stderr:
                    self._redirect(container, spec, stdout, stderr)
                node.image_id = dockerops.commit(container, self.tag(node.key))
                node.result = ExecResult(stdout, stderr, code)
                sidecar = self.cache_dir / "exec" / f"{node.key}.json"
                tmp = sidecar.with_suffix(".tmp")
                tmp.write_text(json.dumps({"stdout": stdout, "stderr": stderr, "exit_code": code}))
                tmp.replace(sidecar)
            finally:
                subprocess.run(["docker", "rm", "--force", container], capture_output=True, check=False)

    def _redirect(self, container: str, spec: ExecSpec, stdout: str, stderr: str) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path, text in ((spec.redirect_stdout, stdout), (spec.redirect_stderr, stderr)):
                if path:
                    full = path if path.startswith("/") else f"{spec.config.workdir.rstrip('/')}/{path}"
                    _add_entry(tar, (full, "bytes", text.encode(), 0o644))
        dockerops.copy_in(container, buf.getvalue())

    def export_image(self, ctr: ContainerValue) -> str:
        """An image whose config is the container's config (what asTarball/publish/export ship)."""
        if ctr.fs is None:
            raise query_error("container has no filesystem: call from() first")
        image = self.materialize(ctr.fs)
        if ctr.built:
            return image
        cfg = ctr.config
        key = digest_of("image", ctr.fs.key, cfg.env, cfg.workdir, cfg.user, cfg.entrypoint, cfg.cmd, cfg.labels)
        existing = dockerops.image_id(self.tag(key))
        if existing is not None:
            return existing
        changes = [f"ENV {k}={json.dumps(v)}" for k, v in cfg.env]
        changes += [f"WORKDIR {cfg.workdir}", f"ENTRYPOINT {json.dumps(list(cfg.entrypoint))}"]
        changes += [f"CMD {json.dumps(list(cfg.cmd))}"] + ([f"USER {cfg.user}"] if cfg.user else [])
        changes += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in cfg.labels]
        changes += [f"EXPOSE {p}" for p in cfg.exposed]
        with dockerops.created(image) as cid:
            return dockerops.commit(cid, self.tag(key), changes)

    def stop_services(self) -> None:
        for container in self._services:
            subprocess.run(["docker", "rm", "--force", container], capture_output=True, check=False)
        self._services.clear()
        for tunnel in self._tunnels.values():
            tunnel.close()
        self._tunnels.clear()

    def host_tunnel(self, svc: HostService) -> str:
        """Where a container bound to a host service reaches it: the bridge gateway, forwarded to the host.

        The engine runs a host service by forwarding each port to `host` on the machine that called
        it (core/schema/host.go Host.service → core/service.go, a tunnel through the session). Here
        a TCP forwarder listens on the Docker bridge's gateway address (reachable only from this
        machine and its containers) on each frontend port and connects to `host`:backend; the
        container's alias resolves to the gateway (`--add-host`). Nothing else of the host's
        loopback is reachable from the container, as on the engine."""
        gateway = _bridge_gateway()
        for front, back in svc.ports:
            with self.lock_for(f"tunnel:{front}"):
                if front not in self._tunnels:
                    self._tunnels[front] = _Forwarder(gateway, front, svc.host, back)
        return gateway

    def host_dir(self, path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> DirValue:
        """A host directory snapshot; re-staged only when a file's size, mtime or mode changed."""
        root = Path(path)
        if not root.is_dir():
            raise query_error(f"{path}: no such host directory")
        sig = _signature(root, include, exclude)
        memo = self._host_dirs.get((path, include, exclude))
        if memo is not None and memo[0] == sig:
            return memo[1]
        value = self._stage_dir(lambda dest: copy_filtered(root, dest, include, exclude))
        self._host_dirs[(path, include, exclude)] = (sig, value)
        return value

    @contextlib.contextmanager
    def extracted(self, ctr: ContainerValue, path: str) -> Iterator[Path]:
        """`path` of a materialised container, copied out to a scratch dir on the host."""
        if ctr.fs is None:
            raise query_error("container has no filesystem: call from() first")
        image = self.materialize(ctr.fs)
        full = path if path.startswith("/") else f"{ctr.config.workdir.rstrip('/')}/{path}"
        scratch = self.workdir / f"out-{secrets.token_hex(8)}"
        try:
            with dockerops.created(image) as cid:
                try:
                    yield dockerops.copy_out(cid, full, scratch)
                except FileNotFoundError as exc:
                    raise query_error(f"{full}: no such file or directory ({exc})") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class ExecSpec:
    """Everything that decides an exec's result, hence its cache key."""

    argv: tuple[str, ...]
    config: Config
    expect: str = "SUCCESS"
    redirect_stdout: str = ""
    redirect_stderr: str = ""
    stdin: str = ""

    def key(self, parent: str, interp: Interpreter) -> str:
        cfg = self.config
        return digest_of(
            EXEC_SEMANTICS,
            parent,
            "exec",
            self.argv,
            cfg.env,
            cfg.workdir,
            cfg.user,
            cfg.caches,
            [(n, interp.secret_mac(s)) for n, s in cfg.secret_env],
            [(p, interp.secret_mac(s), m) for p, s, m in cfg.secret_files],
            cfg.temps,
            [(alias, svc.host, svc.ports) for alias, svc in cfg.bindings],
            self.expect,
            self.redirect_stdout,
            self.redirect_stderr,
            hashlib.sha256(self.stdin.encode()).hexdigest(),
            *([interp.exec_mounts] if interp.exec_mounts else []),
        )


def volume_name(key: str) -> str:
    return "mlship-replay-cache-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", key)


def _started(container: str) -> bool:
    proc = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.StartedAt}}", container],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0 and not proc.stdout.strip().startswith("0001-01-01")


def _signature(root: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> tuple[Any, ...]:
    from replay.patterns import PatternMatcher, keep

    inc, exc = PatternMatcher(include), PatternMatcher(exclude)
    prune = not any(p.exclusion for p in exc.patterns)
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        rel_base = base.relative_to(root).as_posix()
        if prune:
            dirnames[:] = sorted(d for d in dirnames if not exc.matches(_join(rel_base, d)))
        for name in sorted(filenames):
            if keep(_join(rel_base, name), inc, exc):
                st = (base / name).lstat()
                items.append((_join(rel_base, name), st.st_size, st.st_mtime_ns, st.st_mode))
    return tuple(items)


def _add_entry(tar: tarfile.TarFile, entry: tuple[Any, ...]) -> None:
    """One withFile/withNewFile/withDirectory entry as tar members rooted at /."""
    path, kind = entry[0], entry[1]
    name = path.lstrip("/")
    if kind == "bytes":
        data, mode = entry[2], entry[3]
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, 0
        tar.addfile(info, io.BytesIO(data))
    elif kind == "file":
        value, mode = entry[2], entry[3]
        info = tar.gettarinfo(str(value.path), arcname=name)
        info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = mode, 0, 0, "root", "root", 0
        with value.path.open("rb") as fh:
            tar.addfile(info, fh)
    elif kind == "dir":
        value, include, exclude = entry[2], entry[3], entry[4]
        from replay.patterns import PatternMatcher, keep

        inc, exc = PatternMatcher(include), PatternMatcher(exclude)
        if name:
            # The destination exists afterwards even when the source is empty: the engine copies
            # with CreateDestPath (dagger/dagger v0.21.8 core/container.go Container.WithDirectory
            # → core/directory.go Directory.WithDirectory), so `with_directory(p, dag.directory())`
            # makes an empty `p`.
            root = tar.gettarinfo(str(value.path), arcname=name)
            root.uid, root.gid, root.uname, root.gname = 0, 0, "root", "root"
            tar.addfile(root)
        for p in sorted(value.path.rglob("*")):
            rel = p.relative_to(value.path).as_posix()
            if (inc or exc) and not keep(rel, inc, exc):
                continue
            info = tar.gettarinfo(str(p), arcname=f"{name}/{rel}" if name else rel)
            info.uid, info.gid, info.uname, info.gname = 0, 0, "root", "root"
            if info.isfile():
                with p.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    else:
        raise AssertionError(kind)


def _label(selections: list[Any]) -> str:
    """What an awaited chain is, for the timings: its last exec (or build), then its leaf."""
    last = ""
    for sel in selections:
        if sel.name == "withExec":
            last = " ".join(sel.args["args"][:2])
        elif sel.name == "dockerBuild":
            last = "docker build"
        elif sel.name == "asService":
            last = "service " + " ".join(sel.args.get("args", [])[:2])
    return f"{last} → {selections[-1].name}" if last else selections[-1].name


# ---------------- Query ----------------


@op("Query", "container")
def _container(interp: Interpreter, _: _Root, platform: str = "") -> ContainerValue:
    if platform:
        raise UnknownSelection("Query.container(platform=…): the replay runs the host platform only")
    return ContainerValue(fs=None)


@op("Query", "directory")
def _directory(interp: Interpreter, _: _Root) -> DirValue:
    return interp._stage_dir(lambda dest: None)


@op("Query", "host")
def _host(interp: Interpreter, _: _Root) -> HostValue:
    return HostValue()


@op("Query", "cacheVolume")
def _cache_volume(interp: Interpreter, _: _Root, key: str) -> CacheVolume:
    return CacheVolume(key)


@op("Query", "setSecret")
def _set_secret(interp: Interpreter, _: _Root, name: str, plaintext: str) -> SecretValue:
    return SecretValue(name, plaintext)


@op("Query", "secret")
def _secret(interp: Interpreter, root: _Root, uri: str) -> SecretValue:
    scheme, _sep, rest = uri.partition("://")
    if scheme == "env":
        if rest not in os.environ:
            raise query_error(f"secret env var not found: {rest}")
        return SecretValue(uri, os.environ[rest])
    if scheme == "file":
        return SecretValue(uri, Path(rest).read_text())
    raise UnknownSelection(f"Query.secret(uri={scheme}://…): only env:// and file:// are replayed")


# ---------------- Host ----------------


@op("Host", "directory")
def _host_directory(
    interp: Interpreter,
    _: HostValue,
    path: str,
    exclude: list[str] | None = None,
    include: list[str] | None = None,
    noCache: bool = False,
    gitignore: bool = False,
) -> DirValue:
    if gitignore:
        raise UnknownSelection("Host.directory(gitignore=true): not replayed")
    return interp.host_dir(path, tuple(include or ()), tuple(exclude or ()))


@op("Host", "file")
def _host_file(interp: Interpreter, _: HostValue, path: str, noCache: bool = False) -> FileValue:
    src = Path(path)
    if not src.is_file():
        raise query_error(f"{path}: no such host file")
    return interp._stage_file(src.read_bytes(), src.stat().st_mode & 0o777, src.name)


# ---------------- Directory ----------------


def _sub(value: DirValue, path: str) -> Path:
    p = (value.path / path.lstrip("/")).resolve()
    if value.path.resolve() not in (p, *p.parents):
        raise query_error(f"{path}: outside the directory")
    return p


@op("Directory", "file")
def _dir_file(interp: Interpreter, d: DirValue, path: str) -> FileValue:
    p = _sub(d, path)
    if not p.is_file():
        raise query_error(f"{path}: no such file in directory")
    return interp._stage_file(p.read_bytes(), p.stat().st_mode & 0o777, p.name)


@op("Directory", "directory")
def _dir_directory(interp: Interpreter, d: DirValue, path: str) -> DirValue:
    p = _sub(d, path)
    if not p.is_dir():
        raise query_error(f"{path}: no such directory")
    return interp._stage_dir(lambda dest: copy_filtered(p, dest))


@op("Directory", "filter")
def _dir_filter(
    interp: Interpreter,
    d: DirValue,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    gitignore: bool = False,
) -> DirValue:
    if gitignore:
        raise UnknownSelection("Directory.filter(gitignore=true): not replayed")
    return interp._stage_dir(lambda dest: copy_filtered(d.path, dest, tuple(include or ()), tuple(exclude or ())))


@op("Directory", "entries")
def _dir_entries(interp: Interpreter, d: DirValue, path: str = ".") -> list[str]:
    p = _sub(d, path)
    if not p.is_dir():
        raise query_error(f"{path}: no such directory")
    return sorted(c.name + ("/" if c.is_dir() and not c.is_symlink() else "") for c in p.iterdir())


@op("Directory", "sync")
def _dir_sync(interp: Interpreter, d: DirValue) -> DirValue:
    return d


@op("Directory", "withNewFile")
def _dir_with_new_file(
    interp: Interpreter, d: DirValue, path: str, contents: str, permissions: int = 0o644
) -> DirValue:
    def fill(dest: Path) -> None:
        copy_filtered(d.path, dest)
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(contents)
        target.chmod(permissions)

    return interp._stage_dir(fill)


@op("Directory", "withFile")
def _dir_with_file(interp: Interpreter, d: DirValue, path: str, source: FileValue, permissions: int = 0) -> DirValue:
    def fill(dest: Path) -> None:
        copy_filtered(d.path, dest)
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.path, target)
        target.chmod(permissions or source.mode)

    return interp._stage_dir(fill)


@op("Directory", "withDirectory")
def _dir_with_directory(
    interp: Interpreter,
    d: DirValue,
    path: str,
    source: DirValue,
    exclude: list[str] | None = None,
    include: list[str] | None = None,
) -> DirValue:
    def fill(dest: Path) -> None:
        copy_filtered(d.path, dest)
        copy_filtered(source.path, dest / path.lstrip("/"), tuple(include or ()), tuple(exclude or ()))

    return interp._stage_dir(fill)


@op("Directory", "export")
def _dir_export(interp: Interpreter, d: DirValue, path: str, wipe: bool = False) -> str:
    dest = Path(path).resolve()
    if wipe and dest.exists():
        shutil.rmtree(dest)
    copy_filtered(d.path, dest)
    return str(dest)


@op("Directory", "dockerBuild")
def _docker_build(
    interp: Interpreter,
    d: DirValue,
    dockerfile: str = "Dockerfile",
    buildArgs: list[dict[str, str]] | None = None,
    target: str = "",
) -> ContainerValue:
    args: dict[str, str] = {}
    for item in buildArgs or []:
        value = item["value"]
        if value in interp.standins:
            stand_in = interp.standins[value]
            with interp.lock_for(f"standin:{stand_in.tag}"):
                interp.ensure_standin(stand_in)
            interp.substitutions[value] = stand_in.tag
            value = stand_in.tag
        args[item["name"]] = value
    if not (d.path / dockerfile).is_file():
        raise query_error(f"{dockerfile}: no such file in the build context")
    key = digest_of("build", d.digest, dockerfile, args, target)
    with interp.lock_for(key):  # one build per content key, however many awaits need it
        existing = dockerops.image_id(interp.tag(key))
        if existing is None:
            try:
                existing = dockerops.build(d.path, dockerfile, interp.tag(key), args, target)
            except dockerops.BuildError as exc:
                raise query_error(str(exc)) from exc
    return ContainerValue(
        fs=FsNode(key, None, ("build", existing), image_id=existing), config=_config(existing), built=True
    )


def _config(image: str) -> Config:
    data = json.loads(dockerops.docker("image", "inspect", image).stdout)[0]["Config"]
    env = tuple((k, v) for k, _eq, v in (e.partition("=") for e in data.get("Env") or []))
    return Config(
        env=env,
        workdir=data.get("WorkingDir") or "/",
        user=data.get("User") or "",
        entrypoint=tuple(data.get("Entrypoint") or ()),
        cmd=tuple(data.get("Cmd") or ()),
        labels=tuple(sorted((data.get("Labels") or {}).items())),
        exposed=tuple(sorted(int(p.split("/")[0]) for p in (data.get("ExposedPorts") or {}))),
    )


# ---------------- File ----------------


@op("File", "contents")
def _file_contents(interp: Interpreter, f: FileValue, offsetLines: int = 0, limitLines: int = 0) -> str:
    if offsetLines or limitLines:
        raise UnknownSelection("File.contents(offsetLines/limitLines): not replayed")
    return f.path.read_text()


@op("File", "name")
def _file_name(interp: Interpreter, f: FileValue) -> str:
    return f.name


@op("File", "sync")
def _file_sync(interp: Interpreter, f: FileValue) -> FileValue:
    return f


@op("File", "size")
def _file_size(interp: Interpreter, f: FileValue) -> int:
    return f.path.stat().st_size


@op("File", "export")
def _file_export(interp: Interpreter, f: FileValue, path: str, allowParentDirPath: bool = False) -> str:
    dest = Path(path).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(f.path, dest)
    return str(dest)


# ---------------- Container ----------------


@op("Container", "from")
def _from(interp: Interpreter, ctr: ContainerValue, address: str) -> ContainerValue:
    stand_in = interp.standins.get(address)
    if stand_in is None:
        raise UnknownSelection(f"Container.from({address!r}): no stand-in for this image (none can be pulled here)")
    with interp.lock_for(f"standin:{stand_in.tag}"):  # concurrent awaits build a stand-in once
        image = interp.ensure_standin(stand_in)
    interp.substitutions[address] = stand_in.tag
    node = FsNode(digest_of("from", address, image), None, ("from", image), image_id=image)
    return ContainerValue(fs=node, config=_config(image))


def _fs(ctr: ContainerValue) -> FsNode:
    if ctr.fs is None:
        raise query_error("container has no filesystem: call from() first")
    return ctr.fs


def _with_entries(ctr: ContainerValue, entries: list[tuple[Any, ...]], parts: list[Any]) -> ContainerValue:
    parent = _fs(ctr)
    node = FsNode(digest_of(parent.key, "files", parts), parent, ("files", entries))
    return replace(ctr, fs=node, built=False)


def _abs(ctr: ContainerValue, path: str) -> str:
    return path if path.startswith("/") else f"{ctr.config.workdir.rstrip('/')}/{path}"


@op("Container", "withFile")
def _ctr_with_file(
    interp: Interpreter, ctr: ContainerValue, path: str, source: FileValue, permissions: int = 0, owner: str = ""
) -> ContainerValue:
    if owner:
        raise UnknownSelection("Container.withFile(owner=…): not replayed")
    mode = permissions or source.mode
    full = _abs(ctr, path)
    return _with_entries(ctr, [(full, "file", source, mode)], [full, source.digest, mode])


@op("Container", "withNewFile")
def _ctr_with_new_file(
    interp: Interpreter, ctr: ContainerValue, path: str, contents: str = "", permissions: int = 0o644, owner: str = ""
) -> ContainerValue:
    if owner:
        raise UnknownSelection("Container.withNewFile(owner=…): not replayed")
    full = _abs(ctr, path)
    data = contents.encode()
    return _with_entries(
        ctr, [(full, "bytes", data, permissions)], [full, hashlib.sha256(data).hexdigest(), permissions]
    )


@op("Container", "withDirectory")
def _ctr_with_directory(
    interp: Interpreter,
    ctr: ContainerValue,
    path: str,
    source: DirValue,
    exclude: list[str] | None = None,
    include: list[str] | None = None,
    owner: str = "",
) -> ContainerValue:
    if owner:
        raise UnknownSelection("Container.withDirectory(owner=…): not replayed")
    full = _abs(ctr, path)
    inc, exc = tuple(include or ()), tuple(exclude or ())
    return _with_entries(ctr, [(full, "dir", source, inc, exc)], [full, source.digest, inc, exc])


@op("Container", "withEnvVariable")
def _with_env(interp: Interpreter, ctr: ContainerValue, name: str, value: str, expand: bool = False) -> ContainerValue:
    if expand:
        value = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: ctr.config.env_dict().get(m[1] or m[2], ""), value)
    return replace(ctr, config=ctr.config.with_env(name, value), built=False)


@op("Container", "withoutEnvVariable")
def _without_env(interp: Interpreter, ctr: ContainerValue, name: str) -> ContainerValue:
    env = tuple((k, v) for k, v in ctr.config.env if k != name)
    return replace(ctr, config=replace(ctr.config, env=env), built=False)


@op("Container", "withWorkdir")
def _with_workdir(interp: Interpreter, ctr: ContainerValue, path: str, expand: bool = False) -> ContainerValue:
    if expand:
        raise UnknownSelection("Container.withWorkdir(expand=true): not replayed")
    return replace(ctr, config=replace(ctr.config, workdir=_abs(ctr, path)), built=False)


@op("Container", "withLabel")
def _with_label(interp: Interpreter, ctr: ContainerValue, name: str, value: str) -> ContainerValue:
    labels = tuple(sorted({**dict(ctr.config.labels), name: value}.items()))
    return replace(ctr, config=replace(ctr.config, labels=labels), built=False)


@op("Container", "withMountedCache")
def _with_cache(
    interp: Interpreter,
    ctr: ContainerValue,
    path: str,
    cache: CacheVolume,
    sharing: str = "SHARED",
    source: Any = None,
    owner: str = "",
) -> ContainerValue:
    """A cache volume mounted for later execs; `sharing` as the engine's cache mounts.

    dagger/dagger v0.21.8 core/container.go CacheSharingMode → buildkit's CacheMountSharingMode
    (solver/llbsolver/mounts/mount.go): SHARED lets concurrent execs use the volume at once,
    LOCKED makes them take turns; PRIVATE (a fresh copy per concurrent user) is not replayed.
    """
    if source is not None or owner:
        raise UnknownSelection("Container.withMountedCache(source/owner): not replayed")
    if sharing not in ("SHARED", "LOCKED"):
        raise UnknownSelection(f"Container.withMountedCache(sharing={sharing}): not replayed")
    full = _abs(ctr, path)
    caches = (*((p, c, m) for p, c, m in ctr.config.caches if p != full), (full, cache.key, sharing))
    return replace(ctr, config=replace(ctr.config, caches=caches))


@op("Container", "withSecretVariable")
def _with_secret_var(interp: Interpreter, ctr: ContainerValue, name: str, secret: SecretValue) -> ContainerValue:
    secret_env = (*((n, s) for n, s in ctr.config.secret_env if n != name), (name, secret))
    return replace(ctr, config=replace(ctr.config, secret_env=secret_env))


@op("Container", "withMountedSecret")
def _with_mounted_secret(
    interp: Interpreter, ctr: ContainerValue, path: str, source: SecretValue, owner: str = "", mode: int = 0o400
) -> ContainerValue:
    if owner:
        raise UnknownSelection("Container.withMountedSecret(owner=…): not replayed")
    full = _abs(ctr, path)
    files = (*((p, s, m) for p, s, m in ctr.config.secret_files if p != full), (full, source, mode))
    return replace(ctr, config=replace(ctr.config, secret_files=files))


@op("Container", "withExposedPort")
def _with_port(
    interp: Interpreter,
    ctr: ContainerValue,
    port: int,
    protocol: str = "TCP",
    description: str = "",
    experimentalSkipHealthcheck: bool = False,
) -> ContainerValue:
    if protocol != "TCP":
        raise UnknownSelection(f"Container.withExposedPort(protocol={protocol}): not replayed")
    exposed = tuple(sorted({*ctr.config.exposed, port}))
    return replace(ctr, config=replace(ctr.config, exposed=exposed))


@op("Host", "service")
def _host_service(
    interp: Interpreter, _: HostValue, ports: list[dict[str, Any]], host: str = "localhost"
) -> HostService:
    """core/schema/host.go Host.service (v0.21.8): an empty port list is an error."""
    if not ports:
        raise query_error("host.service: no ports given")
    forwards = tuple((int(p.get("frontend") or p["backend"]), int(p["backend"])) for p in ports)
    if any(p.get("protocol", "TCP") != "TCP" for p in ports):
        raise UnknownSelection("Host.service(protocol=UDP): not replayed")
    return HostService("127.0.0.1" if host == "localhost" else host, forwards)


@op("Container", "withServiceBinding")
def _with_service_binding(interp: Interpreter, ctr: ContainerValue, alias: str, service: Any) -> ContainerValue:
    """The alias resolves to the service in this container's later execs (core/container.go
    WithServiceBinding); only host services are replayed as bindings."""
    if not isinstance(service, HostService):
        raise UnknownSelection("Container.withServiceBinding(a container service): not replayed")
    bindings = (*((a, s) for a, s in ctr.config.bindings if a != alias), (alias, service))
    return replace(ctr, config=replace(ctr.config, bindings=bindings))


@op("Container", "withMountedTemp")
def _with_mounted_temp(interp: Interpreter, ctr: ContainerValue, path: str, size: int = 0) -> ContainerValue:
    """A tmpfs at `path` for each exec: written files never reach a layer (core/container.go WithMountedTemp)."""
    if size:
        raise UnknownSelection("Container.withMountedTemp(size=…): not replayed")
    full = _abs(ctr, path)
    return replace(ctr, config=replace(ctr.config, temps=(*(t for t in ctr.config.temps if t != full), full)))


@op("Container", "withEntrypoint")
def _with_entrypoint(
    interp: Interpreter, ctr: ContainerValue, args: list[str], keepDefaultArgs: bool = False
) -> ContainerValue:
    cmd = ctr.config.cmd if keepDefaultArgs else ()
    return replace(ctr, config=replace(ctr.config, entrypoint=tuple(args), cmd=cmd), built=False)


@op("Container", "withExec")
def _with_exec(
    interp: Interpreter,
    ctr: ContainerValue,
    args: list[str],
    useEntrypoint: bool = False,
    expect: str = "SUCCESS",
    redirectStdout: str = "",
    redirectStderr: str = "",
    stdin: str = "",
) -> ContainerValue:
    argv = (*ctr.config.entrypoint, *args) if useEntrypoint else tuple(args)
    if not argv:
        raise query_error("withExec: no command")
    spec = ExecSpec(argv, ctr.config, expect, redirectStdout, redirectStderr, stdin)
    parent = _fs(ctr)
    node = FsNode(spec.key(parent.key, interp), parent, ("exec", spec))
    return replace(ctr, fs=node, last_exec=node, built=False)


def _executed(interp: Interpreter, ctr: ContainerValue) -> ExecResult:
    if ctr.fs is not None:
        interp.materialize(ctr.fs)
    if ctr.last_exec is None or ctr.last_exec.result is None:
        raise query_error("no command has been set: stdout/stderr need a withExec")
    return ctr.last_exec.result


@op("Container", "stdout")
def _stdout(interp: Interpreter, ctr: ContainerValue) -> str:
    return _executed(interp, ctr).stdout


@op("Container", "stderr")
def _stderr(interp: Interpreter, ctr: ContainerValue) -> str:
    return _executed(interp, ctr).stderr


@op("Container", "combinedOutput")
def _combined(interp: Interpreter, ctr: ContainerValue) -> str:
    result = _executed(interp, ctr)
    return result.stdout + result.stderr


@op("Container", "exitCode")
def _exit_code(interp: Interpreter, ctr: ContainerValue) -> int:
    return _executed(interp, ctr).exit_code


@op("Container", "sync")
def _ctr_sync(interp: Interpreter, ctr: ContainerValue) -> ContainerValue:
    interp.materialize(_fs(ctr))
    return ctr


@op("Container", "file")
def _ctr_file(interp: Interpreter, ctr: ContainerValue, path: str, expand: bool = False) -> FileValue:
    with interp.extracted(ctr, path) as out:
        if not out.is_file():
            raise query_error(f"{path}: not a file")
        return interp._stage_file(out.read_bytes(), out.stat().st_mode & 0o777, out.name)


@op("Container", "directory")
def _ctr_directory(interp: Interpreter, ctr: ContainerValue, path: str, expand: bool = False) -> DirValue:
    with interp.extracted(ctr, path) as out:
        if not out.is_dir():
            raise query_error(f"{path}: not a directory")
        return interp._stage_dir(lambda dest: copy_filtered(out, dest))


@op("Container", "asTarball")
def _as_tarball(
    interp: Interpreter,
    ctr: ContainerValue,
    platformVariants: list[Any] | None = None,
    forcedCompression: str = "",
    mediaTypes: str = "OCIMediaTypes",
) -> FileValue:
    if platformVariants or forcedCompression:
        raise UnknownSelection("Container.asTarball(platformVariants/forcedCompression): not replayed")
    image = interp.export_image(ctr)
    path = interp.workdir / "blobs" / f"image-{image.removeprefix('sha256:')}.tar"
    if not path.exists():
        dockerops.save(image, path)
    return FileValue(path, digest_of("tarball", image), 0o644, "image.tar")


@op("Container", "export")
def _ctr_export(
    interp: Interpreter,
    ctr: ContainerValue,
    path: str,
    platformVariants: list[Any] | None = None,
    forcedCompression: str = "",
    mediaTypes: str = "OCIMediaTypes",
    expand: bool = False,
) -> str:
    tarball = _as_tarball(interp, ctr, platformVariants, forcedCompression, mediaTypes)
    return str(_file_export(interp, tarball, path))


@op("Container", "withRegistryAuth")
def _with_auth(
    interp: Interpreter, ctr: ContainerValue, address: str, username: str, secret: SecretValue
) -> ContainerValue:
    host = registry_host(address)
    auths = (*((h, u, s) for h, u, s in ctr.config.auths if h != host), (host, username, secret))
    return replace(ctr, config=replace(ctr.config, auths=auths))


def registry_host(address: str) -> str:
    first = address.split("/", 1)[0]
    return first if ("." in first or ":" in first or first == "localhost") and "/" in address else "docker.io"


@op("Container", "publish")
def _publish(
    interp: Interpreter,
    ctr: ContainerValue,
    address: str,
    platformVariants: list[Any] | None = None,
    forcedCompression: str = "",
    mediaTypes: str = "OCIMediaTypes",
) -> str:
    if platformVariants or forcedCompression:
        raise UnknownSelection("Container.publish(platformVariants/forcedCompression): not replayed")
    host = registry_host(address)
    if not host.startswith(("127.0.0.1:", "localhost:")):
        raise UnknownSelection(f"Container.publish({address!r}): the replay publishes to a registry on 127.0.0.1 only")
    image = interp.export_image(ctr)
    dockerops.docker("tag", image, address)
    auth = next(((u, s) for h, u, s in ctr.config.auths if h == host), None)
    with dockerops.secret_dir() as config_dir:
        env = {**os.environ, "DOCKER_CONFIG": str(config_dir)}
        if auth is not None:
            login = subprocess.run(
                ["docker", "login", host, "--username", auth[0], "--password-stdin"],
                input=auth[1].plaintext.encode(),
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            if login.returncode != 0:
                raise query_error(f"registry login to {host} failed: {login.stderr.decode().strip()}")
        push = subprocess.run(
            ["docker", "push", address], capture_output=True, text=True, env=env, timeout=1800, check=False
        )
    if push.returncode != 0:
        raise query_error(f"failed to publish {address}: {(push.stdout + push.stderr).strip()[-2000:]}")
    match = re.search(r"digest: (sha256:[0-9a-f]{64})", push.stdout)
    if match is None:
        raise query_error(f"push of {address} printed no digest: {push.stdout[-1000:]}")
    return f"{address}@{match.group(1)}"


@op("Container", "asService")
def _as_service(
    interp: Interpreter,
    ctr: ContainerValue,
    args: list[str] | None = None,
    useEntrypoint: bool = False,
    expand: bool = False,
) -> ServiceValue:
    if expand:
        raise UnknownSelection("Container.asService(expand=true): not replayed")
    return ServiceValue(ctr, tuple(args or ()), useEntrypoint)


@op("Service", "up")
def _up(
    interp: Interpreter, svc: ServiceValue, ports: list[dict[str, Any]] | None = None, random: bool = False
) -> None:
    """Start the service published on 127.0.0.1 (the real `up` then blocks; the replay returns)."""
    ctr = svc.container
    if ctr.config.secret_env or ctr.config.secret_files:
        raise UnknownSelection("Service.up with secrets: not replayed")
    image = interp.materialize(_fs(ctr))
    forwards = [(p.get("frontend") or p["backend"], p["backend"]) for p in ports or []]
    if not forwards and not random:
        forwards = [(p, p) for p in ctr.config.exposed]
    if random:
        raise UnknownSelection("Service.up(random=true): not replayed")
    argv = list(svc.args) or list(ctr.config.cmd)
    if svc.use_entrypoint or not svc.args:
        argv = [*ctr.config.entrypoint, *argv]
    name = dockerops.name("svc")
    run = ["run", "--detach", "--name", name, "--workdir", ctr.config.workdir or "/"]
    for key, value in ctr.config.env:
        run += ["--env", f"{key}={value}"]
    for front, back in forwards:
        run += ["--publish", f"127.0.0.1:{front}:{back}"]
    for path, cache, _sharing in ctr.config.caches:
        run += ["--volume", f"{volume_name(cache)}:{path}"]
    if ctr.config.user:
        run += ["--user", ctr.config.user]
    run += ["--entrypoint", argv[0], image, *argv[1:]]
    dockerops.docker(*run)
    interp._services.append(name)


def _bridge_gateway() -> str:
    """The default bridge's gateway: IPAM's Gateway, else the subnet's first address (Docker's default)."""
    import ipaddress

    proc = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"no Docker bridge network for a host service: {proc.stderr.strip()}")
    for config in json.loads(proc.stdout or "[]") or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
        if config.get("Subnet"):
            network = ipaddress.ip_network(config["Subnet"])
            if network.version == 4:
                return str(next(network.hosts()))
    raise RuntimeError(f"the Docker bridge network has no IPv4 subnet: {proc.stdout.strip()}")


class _Forwarder:
    """A TCP forwarder: accepts on (listen_host, port), pipes each connection to (target_host, target_port)."""

    def __init__(self, listen_host: str, port: int, target_host: str, target_port: int) -> None:
        import socket

        self._target = (target_host, target_port)
        self._server = socket.create_server((listen_host, port), reuse_port=False)
        self._server.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"replay-tunnel-{port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)


def _pipe(src: Any, dst: Any) -> None:
    try:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(2)
