"""Alembic environment. Run through ``layers.migrate`` which hands over a connection."""

from alembic import context
from geoalchemy2 import alembic_helpers

from layers.models import Base

config = context.config
connection = config.attributes["connection"]

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    include_object=alembic_helpers.include_object,
    process_revision_directives=alembic_helpers.writer,
    render_item=alembic_helpers.render_item,
    transaction_per_migration=True,
)

with context.begin_transaction():
    context.run_migrations()
