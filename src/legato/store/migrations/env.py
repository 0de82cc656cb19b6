"""Alembic environment for Legato's store.

Legato runs migrations itself (``legato.store.migrate``), handing over an open
connection in ``config.attributes["connection"]``; there is no alembic.ini.  To write a
new revision during development::

    python -c "from legato.store.migrate import revision; revision('what changed')"
"""

from __future__ import annotations

from alembic import context

from legato.store.migrate import VERSION_TABLE
from legato.store.schema import metadata

config = context.config


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
