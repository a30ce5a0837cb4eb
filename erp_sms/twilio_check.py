"""``erp-sms rules test TWILIO``: do the stored credentials work?"""

from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from .channels.twilio import TwilioChannel
from .config import Settings
from .rule_records import TwilioRule


def check_credentials(rule: TwilioRule, settings: Settings) -> tuple[bool, str]:
    """(works, one sentence for staff). Never includes the AuthCode."""
    channel = TwilioChannel(rule, settings)
    try:
        account = channel.client.api.v2010.accounts(rule.sid).fetch()
    except TwilioRestException as exc:
        if exc.status == 401 or exc.code == 20003:
            return False, (
                "TWILIO: Twilio rejected the SID/AuthCode (20003). If someone regenerated the "
                "Auth Token in the Twilio Console, copy the new one and run "
                "`erp-sms rules set TWILIO --auth-code -`"
            )
        return False, f"TWILIO: Twilio answered HTTP {exc.status} (code {exc.code}): {exc.msg}"
    except TwilioException as exc:
        return False, f"TWILIO: Twilio refused the check: {exc}"
    except requests.RequestException as exc:
        return (
            False,
            f"TWILIO: cannot reach Twilio at {settings.twilio_api_url}: {type(exc).__name__}",
        )
    status = getattr(account, "status", "active")
    if status != "active":
        return False, f"TWILIO: the credentials work but the Twilio account is {status}"
    name = getattr(account, "friendly_name", None) or rule.sid
    active = "active" if rule.active else "inactive (turn on with --active)"
    return (
        True,
        f"TWILIO: credentials work (account {name}); sending number {rule.phone_number}; record {active}",
    )
