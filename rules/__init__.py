"""Data, not code: carrier gateways, Twilio error policy, rule types, options, keywords.

Installed as the package ``erp_sms.rules`` so a non-editable install finds the files;
``erp_sms.catalog`` reads them.
"""
