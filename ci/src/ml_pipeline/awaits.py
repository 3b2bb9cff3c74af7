"""The only awaits on the engine: every call that makes the engine run something goes through here.

The rest of the module builds lazy objects; these few functions are where it waits for a result.
Callers reach them as `awaits.<name>` (never imported by name), so the engine-free tests in
ci/tests can stand in for the engine by replacing them on this one module.
"""

from __future__ import annotations

import dagger

from .stages import DataFile


async def file_name(file: dagger.File) -> str:
    return await file.name()


async def named_file(file: dagger.File) -> DataFile:
    return DataFile(file, await file_name(file))


async def named(file: dagger.File | None) -> DataFile | None:
    return None if file is None else await named_file(file)


async def settle(obj: dagger.Container | dagger.Directory) -> None:
    """Force a lazy stage to run (and fail the pipeline if it fails)."""
    if isinstance(obj, dagger.Container):
        await obj.sync()
    else:
        await obj.entries()


async def exit_code(ctr: dagger.Container) -> int:
    return await ctr.exit_code()


async def stdout(ctr: dagger.Container) -> str:
    return await ctr.stdout()


async def stderr(ctr: dagger.Container) -> str:
    return await ctr.stderr()


async def contents(file: dagger.File) -> str:
    return await file.contents()


async def publish(image: dagger.Container, address: str) -> str:
    return await image.publish(address)
