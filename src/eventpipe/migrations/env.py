"""Alembic environment: the URL comes from eventpipe.migrations.runner, never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from eventpipe.core.db import sqlalchemy_url
from eventpipe.domain.tables import Base

url = context.config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("eventpipe migrations need a database URL")

engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
