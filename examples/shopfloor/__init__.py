"""Shopfloor: a small ERP with tables of its own, texting through erp-sms.

The worked example of README "Hosts with their own tables": ``shopfloor.models`` is the
host's schema, ``shopfloor.sms`` the integration module named by
``ERP_SMS_HOST_MODULE=shopfloor.sms``.
"""
