from __future__ import annotations

from alembic import context

from erp_sms.erp import ErpBase
from erp_sms.migrate import VERSION_TABLE
from erp_sms.models import Base

config = context.config
target_metadata = [ErpBase.metadata, Base.metadata]

connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `erp-sms db upgrade` (erp_sms.migrate)")
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
