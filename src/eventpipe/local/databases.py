"""Throwaway databases beside a server's own, for tests and benchmarks sharing one PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg


@contextlib.contextmanager
def fresh_database(url: str, name: str) -> Iterator[str]:
    """A new, empty database `name` beside the one of `url`; its URL. Dropped afterwards.

    Dropped WITH (FORCE): a process that still holds a connection (an api being stopped, a pool
    not yet disposed) must not leave the database behind.
    """
    base, _, _ = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
