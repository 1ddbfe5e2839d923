"""Alembic environment: plain Alembic on ``Base.metadata``, using the app's engine."""

from __future__ import annotations

from alembic import context

from coalition.app import load_models
from coalition.db import Base, db

load_models()


def run_migrations_online() -> None:
    with db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            compare_type=True,
            compare_server_default=True,
            render_as_batch=connection.dialect.name == "sqlite",
            user_module_prefix="coalition.db.",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations_online()
