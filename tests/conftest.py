"""Fixtures of every test directory: the real servers, started once per test run.

Kafka, Redis and PostgreSQL start through eventpipe.local, once for the integration and the
deployment tests alike; a server whose EVENTPIPE_* URL is set in the environment is used as it is.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from eventpipe.core.config import Settings
from eventpipe.local.stack import LocalStack, StackUrls


@pytest.fixture(scope="session")
def stack_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUrls]:
    settings = Settings(state_dir=tmp_path_factory.mktemp("stack"))
    with LocalStack(settings) as stack:
        yield stack.start()


def pytest_sessionfinish() -> None:
    # A librdkafka client still waiting for the garbage collector when the interpreter tears
    # itself down may call its Python logger from a destroyed interpreter: a segfault after
    # every test passed (seen once, exit 139). Collect them now, while Python is whole.
    gc.collect()
