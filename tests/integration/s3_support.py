"""A moto S3 server as a real process, for the export store's tests and the exports' own."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from tests.integration.support import free_port, stop_process, wait_for

REGION = "us-east-1"


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/moto-api/", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server as a real process on its own port, stopped at the module's end."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=log,
        )
    try:
        wait_for(
            lambda: process.poll() is not None or answers(url),
            what="the moto server",
            detail=log_path.read_text,
        )
        assert process.poll() is None, log_path.read_text()
        yield url
    finally:
        stop_process(process)


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"exports-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name
