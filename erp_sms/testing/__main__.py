"""``python -m erp_sms.testing``: the loopback Twilio-compatible API and SMTP sink as a
process of their own, on fixed ports, for a host's end-to-end tests beside a separate
worker. Prints the URLs and the settings to use, then serves until stopped (Ctrl-C or
SIGTERM).

    python -m erp_sms.testing --twilio-port 8701 --smtp-port 8725
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
from typing import Any

import click

from .smtp import SmtpSink
from .twilio import TwilioServer


@click.command()
@click.option("--twilio-port", type=click.IntRange(1, 65535), required=True)
@click.option("--smtp-port", type=click.IntRange(1, 65535), required=True)
@click.option("--account-sid", default=None, help="The account's SID (AC…; random if not given).")
@click.option("--auth-token", default=None, help="Its auth token (random if not given).")
def main(twilio_port: int, smtp_port: int, account_sid: str | None, auth_token: str | None) -> None:
    """Run the loopback Twilio-compatible API and SMTP sink on fixed ports until stopped."""
    sid = account_sid or "AC" + secrets.token_hex(16)
    token = auth_token or secrets.token_hex(16)
    done = threading.Event()

    def stop(*_: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        twilio = TwilioServer(port=twilio_port).start()
        sink = SmtpSink(port=smtp_port).start()
    except OSError as exc:
        click.echo(
            f"erp-sms testing: cannot listen: {exc.strerror or exc}; choose other ports", err=True
        )
        sys.exit(2)
    twilio.add_account(sid, token)
    try:
        click.echo(f"ERP_SMS_TWILIO_API_URL={twilio.url}")
        click.echo(f"ERP_SMS_SMTP_HOST={sink.host}")
        click.echo(f"ERP_SMS_SMTP_PORT={sink.port}")
        click.echo(f"TWILIO_ACCOUNT_SID={sid}")
        click.echo(f"TWILIO_AUTH_TOKEN={token}  # a throwaway token for the loopback API only")
        click.echo("ready", err=True)
        done.wait()
    finally:
        twilio.stop()
        sink.stop()
        click.echo(
            f"stopped: {len(twilio.messages)} text(s) through the API, "
            f"{len(sink.received)} mail(s) at the sink",
            err=True,
        )


if __name__ == "__main__":
    main()
