"""Default text-message templates (Jinja2, sandboxed); staff overrides live in the database.

File name = template name with spaces as underscores, e.g. ``SMS_S2P.txt`` is ``SMS S2P``.
Installed as the package ``erp_sms.email_templates``.
"""
