"""Alembic migrations: branch ``erp`` (reference ERP tables) and branch ``plugin``
(erp-sms's own tables). ``erp_sms.migrate`` runs them."""
