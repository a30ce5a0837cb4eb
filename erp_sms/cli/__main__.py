"""``python -m erp_sms.cli``."""

from . import main

main()
