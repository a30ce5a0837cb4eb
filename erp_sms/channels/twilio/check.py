"""``erp-sms rules test TWILIO``: do the stored credentials work?"""

from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from ...config import Settings
from ...rule_records import TwilioRule
from .channel import TwilioChannel

OK, REJECTED, UNKNOWN = "ok", "rejected", "unknown"


def check_credentials(rule: TwilioRule, settings: Settings) -> tuple[str, str]:
    """(verdict, one sentence for staff); never includes the AuthCode. The verdict is
    ``ok``, ``rejected`` (Twilio said 401/20003: only then are the credentials flagged)
    or ``unknown`` (Twilio could not be asked, or answered something else)."""
    channel = TwilioChannel(rule, settings)
    try:
        account = channel.client.api.v2010.accounts(rule.sid).fetch()
    except TwilioRestException as exc:
        if exc.status == 401 or exc.code == 20003:
            return REJECTED, (
                "TWILIO: Twilio rejected the SID/AuthCode (20003). If someone regenerated the "
                "Auth Token in the Twilio Console, copy the new one and run "
                "`erp-sms rules set TWILIO --auth-code -`"
            )
        return UNKNOWN, f"TWILIO: Twilio answered HTTP {exc.status} (code {exc.code}): {exc.msg}"
    except TwilioException as exc:
        return UNKNOWN, f"TWILIO: Twilio gave no usable answer ({type(exc).__name__}); try again"
    except requests.RequestException as exc:
        return (
            UNKNOWN,
            f"TWILIO: cannot reach Twilio at {settings.twilio_api_url} ({type(exc).__name__}); "
            "the credentials were not checked: try again when the network is back",
        )
    status = getattr(account, "status", "active")
    if status != "active":
        return UNKNOWN, f"TWILIO: the credentials work but the Twilio account is {status}"
    name = getattr(account, "friendly_name", None) or rule.sid
    active = "active" if rule.active else "inactive (turn on with --active)"
    return (
        OK,
        f"TWILIO: credentials work (account {name}); sending number {rule.phone_number}; record {active}",
    )
