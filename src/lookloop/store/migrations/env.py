"""Alembic environment: runs on the connection handed over by ``lookloop.store.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

import lookloop.humans.tables  # noqa: F401 - registers the human-loop tables
import lookloop.jobs.tables  # noqa: F401 - registers the job-progress table
import lookloop.memory.tables  # noqa: F401 - registers the memory and notes tables
from lookloop.store.tables import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(config.get_section(config.config_ini_section) or {}, prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
import lookloop.privacy.tables  # noqa: F401,E402 - registers the privacy tables
