"""Where export files live: a local directory, or an S3 bucket (AWS, MinIO, R2 and the like).

A job writes its file as a partial under the export's key, then publishes it. Publishing is atomic
(a reader sees the whole file or nothing) and idempotent (a retried job may publish again), and a
retried job that opens its partial again starts from an empty file, never from its last attempt's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote

# boto3 and botocore ship no type information; their objects are Any here.
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# A letter or digit first rules out `.`, `..` and the `.partial` directory; no separator can occur.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# The longest validity S3's signature version 4 accepts (7 days).
MAX_LINK_S = 7 * 24 * 3600


def check_key(key: str) -> str:
    """`key` if it is a safe file and object name; ValueError otherwise."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"export key {key!r} is not 1 to 200 of [A-Za-z0-9._-], letter first")
    return key


def attachment_disposition(filename: str) -> str:
    """A `Content-Disposition` that downloads as `filename` (RFC 6266), safe as a header value."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


class ExportStore(Protocol):
    def open_partial(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A writable file for the job's output under `key`, empty even if an attempt left one."""

    def publish(self, key: str) -> int:
        """Make the partial the file under `key` at once; its size. Harmless to repeat."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """Bytes of the published file; FileNotFoundError if there is none."""

    def open_read(self, key: str) -> BinaryIO:
        """The published file, to stream; FileNotFoundError if there is none."""

    def delete(self, key: str) -> None:
        """Remove the published file and any partial; nothing if there are none."""

    def presigned_url(self, key: str, expires_s: int, filename: str) -> str | None:
        """A link that downloads the file as `filename`; None if the store cannot sign links."""


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalExportStore:
    """Export files in a local directory: the api serves them and signs its own links."""

    def __init__(self, root: Path) -> None:
        self._root = root
        # Inside the root, hence on its file system: os.replace from there is an atomic rename.
        self._partials = root / ".partial"

    @contextmanager
    def open_partial(self, key: str) -> Iterator[BinaryIO]:
        path = self._partials / check_key(key)
        self._partials.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as file:  # "wb" truncates what an earlier attempt wrote
            yield file

    def publish(self, key: str) -> int:
        partial, final = self._partials / check_key(key), self._root / key
        try:
            # Data on disk before the name points at it, so a crash cannot publish a torn file.
            _fsync(partial)
        except FileNotFoundError:
            return self.size(key)  # published by an earlier call
        os.replace(partial, final)
        _fsync(self._root, os.O_RDONLY | os.O_DIRECTORY)  # and the rename itself survives one
        return final.stat().st_size

    def exists(self, key: str) -> bool:
        return (self._root / check_key(key)).is_file()

    def size(self, key: str) -> int:
        return (self._root / check_key(key)).stat().st_size

    def open_read(self, key: str) -> BinaryIO:
        return (self._root / check_key(key)).open("rb")

    def delete(self, key: str) -> None:
        (self._root / check_key(key)).unlink(missing_ok=True)
        (self._partials / key).unlink(missing_ok=True)

    def presigned_url(self, key: str, expires_s: int, filename: str) -> str | None:
        del key, expires_s, filename  # the api signs links to the files it serves itself
        return None


def _not_found(error: ClientError) -> bool:
    # HEAD has no body to name the error, so S3 answers a missing key with a bare "404".
    return error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}


class S3ExportStore:
    """Export files as objects under `prefix` in `bucket`; downloads go by presigned link.

    The partial is a spool file in `spool_dir`, named by the key so a retry overwrites it.
    Credentials, endpoint and region left None come from boto3's usual chain (environment,
    instance or pod role).
    """

    def __init__(
        self,
        bucket: str,
        *,
        spool_dir: Path,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "exports/",
    ) -> None:
        self._bucket, self._prefix, self._spool_dir = bucket, prefix, spool_dir
        # A self-hosted endpoint is rarely reachable as <bucket>.<host>: address it by path.
        addressing = "path" if endpoint_url else "auto"
        config = Config(signature_version="s3v4", s3={"addressing_style": addressing})
        # A session of our own: boto3's default one is shared and not safe to build clients from
        # in several threads; the client itself is.
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def _object(self, key: str) -> str:
        return f"{self._prefix}{check_key(key)}"

    def _spool(self, key: str) -> Path:
        return self._spool_dir / check_key(key)

    @contextmanager
    def open_partial(self, key: str) -> Iterator[BinaryIO]:
        path = self._spool(key)
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as file:  # "wb" truncates what an earlier attempt wrote
            yield file

    def publish(self, key: str) -> int:
        spool = self._spool(key)
        try:
            size = spool.stat().st_size
        except FileNotFoundError:
            return self.size(key)  # uploaded and removed by an earlier call
        # One PUT, or a multipart upload above 8 MiB: either way the object appears only once
        # all of it is in, so no reader ever sees part of a file.
        self._client.upload_file(str(spool), self._bucket, self._object(key))
        spool.unlink()
        return size

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._client.head_object(
                Bucket=self._bucket, Key=self._object(key)
            )
        except ClientError as error:
            if _not_found(error):
                return None
            raise
        return head

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(f"no export {key!r} in s3://{self._bucket}/{self._prefix}")
        return int(head["ContentLength"])

    def open_read(self, key: str) -> BinaryIO:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._object(key))
        except ClientError as error:
            if _not_found(error):
                raise FileNotFoundError(f"no export {key!r} in s3://{self._bucket}") from error
            raise
        # botocore's StreamingBody: read(n) and close() over the response as it arrives.
        body: BinaryIO = response["Body"]
        return body

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self._bucket, Key=self._object(key))
        self._spool(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, expires_s: int, filename: str) -> str | None:
        if not 0 < expires_s <= MAX_LINK_S:
            raise ValueError(f"a signed link lasts 1 to {MAX_LINK_S} s, not {expires_s}")
        params = {
            "Bucket": self._bucket,
            "Key": self._object(key),
            "ResponseContentDisposition": attachment_disposition(filename),
        }
        url: str = self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_s
        )
        return url
