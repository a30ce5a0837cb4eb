"""The demo's host module: ``ERP_SMS_HOST_MODULE=erp_sms.demo_host`` makes the commands
run after ``erp-sms demo`` know what the demo's ERP knew — its reminder sequence
(``erp-sms sequences show dunning``) on the reference schema's tables. A host's own module
looks the same: a lookup for its tables, and the events and sequences it registers.
"""

from __future__ import annotations

from .demo_data import register
from .recipients import ErpLookup, set_default_lookup

register()
set_default_lookup(ErpLookup())  # the demo's ERP is the reference schema
