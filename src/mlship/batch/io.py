"""Where batch data lives: local files, folders, globs or `s3://` prefixes, read and written alike.

Inputs are listed (a file, every `.csv`/`.parquet` under a folder or prefix, or the matches of
a glob) and read chunk by chunk, so memory is bounded by the chunk size, never by the file.
Outputs are a Parquet dataset: one part per input, each staged under a `_tmp-`/`.` name and moved
into place only once complete (locally a rename; on S3 a server-side copy, which publishes the
whole object at once, then a delete of the staged key), and the `_SUCCESS` manifest written
last. Readers (pandas, pyarrow, Spark) ignore `_`- and `.`-prefixed names, so a run that dies
leaves only complete parts, and no manifest, visible.

S3 credentials come from the usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE
and ~/.aws, instance roles); AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL points at any
S3-compatible store (MinIO, Ceph, moto), AWS_REGION/AWS_DEFAULT_REGION picks the region.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlship.data.io import LineCapped, check_column_names, check_csv
from mlship.errors import ConfigError, InfraError, MlshipError
from mlship.report_text import one_line

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.fs as pafs

SUFFIXES = (".parquet", ".csv")
MANIFEST = "_SUCCESS"
STAGING = "_tmp"
GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is, and its size and mtime (with content_fingerprint: whether it changed)."""

    path: str
    """Path on its filesystem (`bucket/key` on S3)."""
    uri: str
    """As the user would write it (`s3://bucket/key` or a local path)."""
    relative: str
    """Path under the input root: what the part name is derived from."""
    size: int
    mtime_ns: int

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.path)[1].lower()

    def fingerprint(self) -> dict[str, Any]:
        return {"input": self.uri, "size": self.size, "mtime_ns": self.mtime_ns}


SAMPLE_BYTES = 1 << 20
"""How much of each end of a local input the resume fingerprint hashes."""


def content_fingerprint(fs: pafs.FileSystem, inp: InputFile) -> dict[str, Any]:
    """What says an input is the one a part was made from: size, mtime, and a content key.

    Size and mtime alone trust the clock: an edit that keeps the length and restores the mtime
    (`touch -r`, `rsync --times`, a restore from backup) would be skipped. The content key is the
    object store's ETag on S3 (one HEAD; it changes with every write of the object), and locally
    a sha256 of the first and last MiB (the whole file up to 2 MiB): cheap for any size, and it
    catches edits at either end (a header, appended or cut rows). An edit confined to the middle
    of a larger file with size and mtime restored is what it still cannot see; `--overwrite` redoes all.
    """
    key = inp.fingerprint()
    with storage(f"read {inp.uri}"), fs.open_input_file(inp.path) as handle:
        if fs.type_name == "s3":
            meta = {str(k.decode() if isinstance(k, bytes) else k): v for k, v in (handle.metadata() or {}).items()}
            etag = meta.get("ETag")  # from the HEAD pyarrow makes when it opens the object
            if etag:
                text = etag.decode("ascii", errors="replace") if isinstance(etag, bytes) else str(etag)
                return {**key, "etag": text.strip('"')}
        digest = hashlib.sha256()
        if inp.size <= 2 * SAMPLE_BYTES:
            digest.update(handle.read_at(inp.size, 0))
        else:
            digest.update(handle.read_at(SAMPLE_BYTES, 0))
            digest.update(handle.read_at(SAMPLE_BYTES, inp.size - SAMPLE_BYTES))
    return {**key, "ends_sha256": digest.hexdigest()}


def is_s3(spec: str) -> bool:
    return spec.startswith("s3://")


def s3_filesystem() -> pafs.FileSystem:
    """An S3 filesystem with the standard credential chain and the endpoint from the environment."""
    import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    options: dict[str, Any] = {
        "region": region,
        "connect_timeout": 5,
        "request_timeout": 30,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
    }
    if endpoint:
        options["endpoint_override"] = endpoint
    return pafs.S3FileSystem(**options)


def s3_client() -> Any:
    """A boto3 S3 client on the same endpoint, region and credential chain as `s3_filesystem`.

    pyarrow's S3 filesystem has no call for multipart uploads; boto3 is the ordinary client for
    ListMultipartUploads/AbortMultipartUpload. Imported here only (heavy, S3 outputs only).
    """
    import boto3  # noqa: PLC0415 - boto3: heavy, imported where it is used (off `--help` and the light paths)
    from botocore.config import Config  # noqa: PLC0415 - botocore: heavy, imported where it is used (off `--help` and the light paths)

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region, config=config)


def abort_staged_uploads(root: str, spec: str) -> list[str]:
    """Abort the unfinished multipart uploads of mlship staging keys directly under `root` (`bucket/prefix`).

    A run killed while pyarrow streamed a large part leaves its multipart upload open: S3 keeps
    (and bills) the uploaded parts until the upload is aborted (S3 API reference,
    AbortMultipartUpload; ListMultipartUploads lists them by prefix). Only keys named like
    `Dataset.staged`'s `_tmp-<32 hex>-…` are touched, never another writer's uploads; like the
    staging cleanup above, this assumes one run per output at a time.
    """
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - botocore: heavy, imported where it is used (off `--help` and the light paths)

    bucket, _, prefix = root.partition("/")
    folder = f"{prefix.rstrip('/')}/" if prefix else ""
    aborted: list[str] = []
    try:
        client = s3_client()
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=folder):
            for upload in page.get("Uploads", []):
                name = str(upload["Key"])[len(folder) :]
                if "/" in name or not _is_staging(name):
                    continue
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted.append(f"s3://{bucket}/{upload['Key']}")
    except (BotoCoreError, ClientError) as exc:
        raise storage_error(OSError(str(exc)), f"abort unfinished uploads under {spec}", write=True) from None
    return aborted


def split(spec: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it) for a local path or an `s3://bucket/key` URI; other schemes are exit 2."""
    import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    if is_s3(spec):
        path = spec[len("s3://") :].strip("/")
        bucket = path.split("/")[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise ConfigError(f"bad S3 URI {spec!r}: no valid bucket name", hint="write s3://bucket/prefix")
        return s3_filesystem(), path
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", spec):
        raise ConfigError(f"unsupported URI scheme in {spec!r}", hint="use a local path or s3://bucket/prefix")
    return pafs.LocalFileSystem(), os.path.abspath(spec)


def real_path(fs: pafs.FileSystem, path: str) -> str:
    """Where a path really is: symlinks and `..` resolved locally (object keys have neither)."""
    return path if fs.type_name == "s3" else os.path.realpath(path)


def within(path: str, root: str) -> bool:
    """`path` is `root` or under it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def uri_of(fs: pafs.FileSystem, path: str) -> str:
    """How a path is shown: `s3://bucket/key`, or a local path relative to the working directory when under it."""
    if fs.type_name == "s3":
        return f"s3://{path}"
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def storage_error(exc: OSError, what: str, *, write: bool = False) -> MlshipError:
    """Classify a filesystem error: unreachable store or refused credentials is exit 3, a bad path exit 2.

    `write` says the operation writes (or deletes): the hint then asks for a writable path.
    """
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    unreachable = ("NETWORK_CONNECTION", "curlCode", "Could not resolve", "Could not connect", "Timeout", "timed out")
    if any(k in text for k in unreachable):
        return InfraError(
            f"cannot {what}: the object store is unreachable ({first})",
            hint="check AWS_ENDPOINT_URL / the network",
        )
    if any(
        k in text
        for k in (
            "ACCESS_DENIED",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "credentials",
            "Forbidden",
            "403",
        )
    ):
        return InfraError(
            f"cannot {what}: access denied ({first})",
            hint="no or wrong credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE "
            "to ones allowed there",
        )
    if "HTTP status 5" in text:
        return InfraError(f"cannot {what}: the object store failed ({first})", hint="retry, or check the store")
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return ConfigError(f"cannot {what}: no such bucket ({first})", hint="check the s3:// URI")
    access = "writable" if write else "readable"
    return ConfigError(f"cannot {what}: {first}", hint=f"check the path and that it is {access}")


@contextmanager
def storage(what: str, *, write: bool = False) -> Iterator[None]:
    """Turn filesystem errors inside the block into one-line errors with the right exit code."""
    try:
        yield
    except MlshipError:
        raise
    except OSError as exc:
        raise storage_error(exc, what, write=write) from None


def list_inputs(spec: str) -> tuple[pafs.FileSystem, list[InputFile]]:
    """The `.csv`/`.parquet` files a spec names, sorted: a file, a folder or prefix, or a glob."""
    import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    fs, path = split(spec)
    with storage(f"list {spec}"):
        if GLOB_CHARS.search(path):
            root = _glob_root(path)
            files = [i for i in _walk(fs, root) if fnmatch.fnmatchcase(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.File:
                if info.extension.lower() not in ("parquet", "csv"):
                    raise ConfigError(f"unsupported input {info.base_name}", hint="use .csv or .parquet")
                root, files = os.path.dirname(path), [info]
            else:
                root, files = path, _walk(fs, path) if info.type == pafs.FileType.Directory else []
    chosen = sorted(
        (i for i in files if i.extension.lower() in ("parquet", "csv") and not _hidden(i.path, root)),
        key=lambda i: i.path,
    )
    if not chosen:
        raise ConfigError(
            f"cannot read {spec}: no such file, or no .csv/.parquet files there",
            hint="pass an existing CSV or Parquet file, a folder or glob of them, or an s3:// prefix",
        )
    return fs, [
        InputFile(
            path=i.path,
            uri=uri_of(fs, i.path),
            relative=os.path.relpath(i.path, root) if root else i.path,
            size=int(i.size or 0),
            mtime_ns=int(i.mtime_ns or 0),
        )
        for i in chosen
    ]


def _glob_root(pattern: str) -> str:
    """The longest folder of a glob without wildcards: where to start listing."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts:
        if GLOB_CHARS.search(part):
            break
        fixed.append(part)
    root = "/".join(fixed)
    return root or ("/" if pattern.startswith("/") else "")


def _walk(fs: pafs.FileSystem, root: str) -> list[Any]:
    import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return [i for i in infos if i.type == pafs.FileType.File]


def _hidden(path: str, root: str) -> bool:
    """Names starting with `_` or `.` (manifests, staging, reports) are not data, as for Spark and pyarrow."""
    rel = os.path.relpath(path, root) if root else path
    return any(part.startswith(("_", ".")) for part in rel.split("/"))


def _is_staging(base: str) -> bool:
    """A name `Dataset.staged` gives (`_tmp-<id>-name` on S3, `.name.<id>.tmp` locally), not anyone else's."""
    return re.fullmatch(rf"{STAGING}-[0-9a-f]{{32}}-.+|\..+\.[0-9a-f]{{32}}\.tmp", base) is not None


def part_name(inp: InputFile) -> str:
    """A stable, unique part name for an input: readable stem plus a hash of its relative path."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", os.path.splitext(inp.relative)[0].replace("/", "-")).strip("-.")
    digest = hashlib.sha256(inp.relative.encode()).hexdigest()[:8]
    return f"part-{stem[:80] or 'input'}-{digest}.parquet"


def read_chunks(fs: pafs.FileSystem, inp: InputFile, chunk_size: int) -> Iterator[pd.DataFrame]:
    """DataFrames of at most `chunk_size` rows, streamed: Parquet by record batch, CSV by chunk.

    A file that is not what its suffix says, or is cut short, is bad input (exit 2), not a crash;
    an unreachable store or refused credentials is exit 3.
    """
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)
    import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    try:
        if inp.suffix == ".parquet":
            with fs.open_input_file(inp.path) as handle:
                parquet = pq.ParquetFile(handle)
                check_column_names(parquet.schema_arrow.names, inp.uri)
                for batch in parquet.iter_batches(batch_size=chunk_size):
                    yield batch.to_pandas()
        else:
            check_csv(fs, inp.path, inp.uri, inp.size)
            with fs.open_input_stream(inp.path) as handle:
                capped: Any = LineCapped(handle, inp.uri)  # duck-typed: pandas only calls read()
                yield from pd.read_csv(capped, chunksize=chunk_size)
    except OSError as exc:
        if fs.type_name == "s3":
            raise storage_error(exc, f"read {inp.uri}") from None
        raise _bad_file(inp, exc) from None
    except (ValueError, UnicodeDecodeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise _bad_file(inp, exc) from None


def _bad_file(inp: InputFile, exc: Exception) -> ConfigError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"cannot read {inp.uri}: {one_line(first)}", hint="is the file complete and of that format?")


class Dataset:
    """The output: a folder or `s3://` prefix of Parquet parts, staged writes, manifest last."""

    def __init__(self, spec: str) -> None:
        self.spec = spec.rstrip("/")
        self.fs, self.root = split(spec)
        self.is_s3 = self.fs.type_name == "s3"

    def uri(self, name: str) -> str:
        return uri_of(self.fs, f"{self.root}/{name}")

    def prepare(self, *, dataset: bool = True) -> list[str]:
        """Create the folder, drop stale staging and (for a dataset, about to change) the manifest.

        On S3 it also aborts the multipart uploads of staging keys that a killed run left
        unfinished (invisible in a listing, billed until aborted); returns their keys.
        """
        import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

        with storage(f"write to {self.spec}", write=True):
            if dataset and self.fs.get_file_info(f"{self.root}/{MANIFEST}").type == pafs.FileType.File:
                self.fs.delete_file(f"{self.root}/{MANIFEST}")
            if not self.is_s3:
                self.fs.create_dir(self.root, recursive=True)
            for info in self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True)):
                if info.type == pafs.FileType.File and _is_staging(info.base_name):
                    self.fs.delete_file(info.path)  # left by a run that was killed mid-part
        return abort_staged_uploads(self.root, self.spec) if self.is_s3 else []

    def part_metadata(self, name: str) -> dict[bytes, bytes] | None:
        """The key-value metadata of a finished part (None when there is none, or it is unreadable)."""
        import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)
        import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

        path = f"{self.root}/{name}"
        with storage(f"read {self.uri(name)}"):
            if self.fs.get_file_info(path).type != pafs.FileType.File:
                return None
        try:
            with self.fs.open_input_file(path) as handle:
                return dict(pq.ParquetFile(handle).metadata.metadata or {})
        except (OSError, ValueError):
            return None  # not a Parquet file we wrote: it is redone

    @contextmanager
    def staged(self, name: str) -> Iterator[Any]:
        """A writable stream for `name`; moved into place only if the block completes.

        Locally the staging file is a hidden `.name.<id>.tmp` beside the target (same
        filesystem, so the rename is atomic); on S3 it is a
        `_tmp-<id>-name` key beside the parts, and the move is a server-side copy (the object
        appears whole or not at all) then a delete. Both names are ignored by readers.
        """
        final = f"{self.root}/{name}"
        if self.is_s3:  # beside the parts: a `_tmp/` folder would leave a marker object once emptied
            staging = f"{self.root}/{STAGING}-{uuid.uuid4().hex}-{name.replace('/', '-')}"
        else:
            parent, base = os.path.split(final)
            staging = f"{parent}/.{base}.{uuid.uuid4().hex}.tmp"
        with storage(f"write {self.uri(name)}", write=True):
            if not self.is_s3:
                self.fs.create_dir(os.path.dirname(final), recursive=True)
            stream = self.fs.open_output_stream(staging)
        try:
            with stream:
                yield stream
            with storage(f"write {self.uri(name)}", write=True):
                self.fs.move(staging, final)
        finally:
            with suppress(OSError):
                self.fs.delete_file(staging)  # fails when it was already moved into place

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write a small file (report, manifest) atomically; return its URI."""
        with self.staged(name) as stream:
            stream.write(data)
        return self.uri(name)

    def remove(self, name: str) -> None:
        """Delete `name` if it is there (a part this run refused must not stay from an earlier run)."""
        import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

        with storage(f"delete {self.uri(name)}", write=True):
            if self.fs.get_file_info(f"{self.root}/{name}").type == pafs.FileType.File:
                self.fs.delete_file(f"{self.root}/{name}")

    def drop_parts_except(self, keep: set[str]) -> list[str]:
        """Delete the `part-*.parquet` files of inputs that are gone, so the folder is what the manifest says."""
        import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

        with storage(f"list {self.spec}"):
            stale = [
                i.base_name
                for i in self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
                if i.type == pafs.FileType.File and re.fullmatch(r"part-.+\.parquet", i.base_name)
                and i.base_name not in keep
            ]  # fmt: skip
        for name in stale:
            self.remove(name)
        return stale

    def finish(self, manifest: dict[str, Any]) -> str:
        """Write the manifest: the mark of a complete dataset, written after every part."""
        return self.write_bytes(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
