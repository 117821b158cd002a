"""Export stores against real storage: a local directory, and S3 as served by a moto server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from eventpipe.exports.store import LocalExportStore, S3ExportStore
from tests.integration.s3_support import REGION

pytestmark = pytest.mark.integration

CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}
TRAVERSALS = ["..", ".", "../x", "a/b", "/etc/passwd", ".partial", "", "x\\y", "a b"]


@pytest.fixture
def s3_store(s3_endpoint: str, bucket: str, tmp_path: Path) -> S3ExportStore:
    return S3ExportStore(
        bucket, spool_dir=tmp_path / "spool", endpoint_url=s3_endpoint, region=REGION, **CREDENTIALS
    )


def test_local_retry_overwrites_its_partial_and_publish_is_atomic(tmp_path: Path) -> None:
    store = LocalExportStore(tmp_path / "exports")
    with store.open_partial("job-1.csv") as file:
        file.write(b"aaaa")
    with store.open_partial("job-1.csv") as file:  # the retried attempt
        file.write(b"b")
    assert not store.exists("job-1.csv")
    assert not (tmp_path / "exports" / "job-1.csv").exists()
    with pytest.raises(FileNotFoundError):
        store.size("job-1.csv")
    assert store.publish("job-1.csv") == 1
    assert store.publish("job-1.csv") == 1  # again, as a retried job would
    assert store.exists("job-1.csv") and store.size("job-1.csv") == 1
    with store.open_read("job-1.csv") as file:
        assert file.read() == b"b"
    assert not any((tmp_path / "exports" / ".partial").iterdir())
    assert store.presigned_url("job-1.csv", 60, "events.csv") is None
    store.delete("job-1.csv")
    store.delete("job-1.csv")
    assert not store.exists("job-1.csv")


def test_local_publish_without_a_partial_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalExportStore(tmp_path).publish("never-written")


@pytest.mark.parametrize("key", TRAVERSALS)
def test_keys_that_could_leave_the_store_are_refused(tmp_path: Path, key: str) -> None:
    root = tmp_path / "exports"
    store = LocalExportStore(root)
    with pytest.raises(ValueError), store.open_partial(key):
        pass
    for method in (store.publish, store.exists, store.size, store.open_read, store.delete):
        with pytest.raises(ValueError):
            method(key)
    assert not root.exists() or list(root.iterdir()) == []


def test_s3_publish_uploads_the_last_attempt_and_links_to_it(
    s3_store: S3ExportStore, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    with s3_store.open_partial("job-2.ndjson") as file:
        file.write(b"stale attempt\n" * 100)
    with s3_store.open_partial("job-2.ndjson") as file:
        file.write('{"event":"Über"}\n'.encode())
    assert not s3_store.exists("job-2.ndjson")
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    with pytest.raises(FileNotFoundError):
        s3_store.size("job-2.ndjson")

    expected = '{"event":"Über"}\n'.encode()
    assert s3_store.publish("job-2.ndjson") == len(expected)
    assert list((tmp_path / "spool").iterdir()) == []  # the spool file is gone
    assert s3_store.publish("job-2.ndjson") == len(expected)  # from the object itself
    assert s3_store.exists("job-2.ndjson") and s3_store.size("job-2.ndjson") == len(expected)
    stored = s3_client.get_object(Bucket=bucket, Key="exports/job-2.ndjson")["Body"].read()
    assert stored == expected
    with s3_store.open_read("job-2.ndjson") as body:
        assert body.read() == expected

    url = s3_store.presigned_url("job-2.ndjson", 300, "événements 2026.ndjson")
    assert url is not None and "X-Amz-Signature=" in url
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == expected
    assert response.headers["content-disposition"] == (
        'attachment; filename="_v_nements 2026.ndjson"; '
        "filename*=UTF-8''%C3%A9v%C3%A9nements%202026.ndjson"
    )


def test_s3_multipart_upload_and_delete(
    s3_store: S3ExportStore, s3_client: Any, bucket: str
) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with s3_store.open_partial("big.parquet") as file:
        for _ in range(9):  # above boto3's 8 MiB multipart threshold
            file.write(chunk)
    assert s3_store.publish("big.parquet") == 9 * len(chunk)
    head = s3_client.head_object(Bucket=bucket, Key="exports/big.parquet")
    assert head["ETag"].endswith('-2"')  # assembled from two parts
    with s3_store.open_read("big.parquet") as body:
        assert body.read() == chunk * 9
    s3_store.delete("big.parquet")
    s3_store.delete("big.parquet")
    assert not s3_store.exists("big.parquet")
    with pytest.raises(FileNotFoundError):
        s3_store.open_read("big.parquet")


def test_s3_refuses_unsafe_keys_and_overlong_links(s3_store: S3ExportStore) -> None:
    with pytest.raises(ValueError), s3_store.open_partial("../escape"):
        pass
    with pytest.raises(ValueError):
        s3_store.presigned_url("../escape", 60, "x.csv")
    with pytest.raises(ValueError):
        s3_store.presigned_url("fine.csv", 8 * 24 * 3600, "x.csv")
