"""Route every awaited dagger-io leaf through the interpreter instead of an engine session.

dagger-io 0.21.11 sends a query in exactly two places (dagger/client/_core.py):
`Context.execute` (stdout, entries, export, publish, contents, up, …) and
`Context.execute_sync` (`sync` / `await obj`). Both get the recorded selections; here
they hand them to the interpreter, so the module's own code (its task groups, its awaits,
its error handling) runs unchanged, and errors are the SDK's own exception types.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import cattrs
from dagger.client._core import Context

from replay.interpreter import Interpreter
from replay.values import ContainerValue, DirValue, FileValue


def _plain(value: Any) -> Any:
    """Leaf results are plain data; an object result is an error in a terminal."""
    if isinstance(value, ContainerValue | DirValue | FileValue):
        raise TypeError(f"a terminal selection returned a {type(value).__name__}, not data")
    return value


@contextlib.contextmanager
def replaying(interp: Interpreter) -> Iterator[Interpreter]:
    """Within the block, awaiting any dagger-io object evaluates it with `interp`.

    Services started by `up` outlive the block (the real `up` blocks while they serve); the
    caller stops them with `interp.stop_services()`.
    """
    original_execute, original_sync = Context.execute, Context.execute_sync

    # Each await is one query the engine answers on its own: the SDK sends it and awaits the
    # HTTP response (dagger/client/_core.py Context.execute → gql session.execute), so awaits
    # from sibling tasks are in flight together and the engine solves them concurrently. Here
    # each runs on a worker thread (the interpreter is synchronous: docker subprocesses), so a
    # task group's stages overlap in time as they do on the engine; the interpreter's per-key
    # locks make a shared node run once.
    async def execute(self: Context, return_type: Any = None) -> Any:
        selections = list(self.selections)
        value = _plain(await anyio.to_thread.run_sync(interp.terminal, selections))
        if return_type is None:
            return None
        return cattrs.structure(value, return_type) if value is not None else None

    async def execute_sync(self: Context, obj: Any, field_name: str = "sync", args: Any = ()) -> Any:
        ctx: Context = obj._select(field_name, args)
        await anyio.to_thread.run_sync(interp.terminal, list(ctx.selections))
        return obj

    Context.execute = execute  # type: ignore[method-assign]
    Context.execute_sync = execute_sync  # type: ignore[method-assign]
    try:
        yield interp
    finally:
        Context.execute = original_execute  # type: ignore[method-assign]
        Context.execute_sync = original_sync  # type: ignore[method-assign]
