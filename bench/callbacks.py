"""Status callbacks through ``erp-sms serve`` against a Flask endpoint that only checks
the signature with twilio's RequestValidator, under the same waitress (8 threads, its
own process each), driven by the same client (8 connections kept alive, signed forms as
Twilio sends them). The peer and erp-sms alternate, three rounds each."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import text
from twilio.request_validator import RequestValidator

from erp_sms import rule_records
from erp_sms.db import Database

from . import common

TEXTS = 3000
CLIENTS = 8
ROUNDS = 3

PEER = """
import sys
from flask import Flask, Response, abort, request
from twilio.request_validator import RequestValidator
from waitress import serve
app = Flask("peer")
validator = RequestValidator(%(token)r)
@app.post("/twilio/status")
def status():
    url = %(public)r + "/twilio/status"
    if not validator.validate(url, request.form, request.headers.get("X-Twilio-Signature", "")):
        abort(403)
    return Response(status=204)
print("listening", flush=True)
serve(app, host="127.0.0.1", port=%(port)d, threads=8, _quiet=True)
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], env: dict[str, str], ready: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # until the server says it listens
        if ready in line:
            return proc
    raise RuntimeError(f"{args[:3]} exited before listening")


def _drive(port: int, forms: list[dict[str, str]], public: str) -> float:
    """Callbacks per second: ``forms`` posted by CLIENTS threads, keep-alive."""
    validator = RequestValidator(common.TOKEN)
    signed = [
        (urlencode(f), validator.compute_signature(public + "/twilio/status", f)) for f in forms
    ]
    shares = [signed[i::CLIENTS] for i in range(CLIENTS)]
    failures: list[int] = []
    go = threading.Barrier(CLIENTS + 1)

    def client(share: list[tuple[str, str]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        go.wait()
        for body, sig in share:
            conn.request(
                "POST",
                "/twilio/status",
                body,
                {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig},
            )
            answer = conn.getresponse()
            answer.read()
            if answer.status != 204:
                failures.append(answer.status)
        conn.close()

    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    go.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} callbacks refused ({failures[0]})")
    return len(forms) / elapsed


def _forms(sids: list[str], status: str) -> list[dict[str, str]]:
    return [
        {
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": common.SID,
            "From": "+13125550000",
            "To": "+13125550101",
            "ApiVersion": "2010-04-01",
        }
        for sid in sids
    ]


def row(name: str) -> dict[str, Any]:
    url = common.new_url(name)
    engine = common.fresh(url)
    common.queue_texts(engine, TEXTS, gateway=False)
    with engine.begin() as c:
        # Sent through Twilio: each has the SID its callbacks name.
        ids = [r[0] for r in c.execute(text("SELECT id FROM sms_message ORDER BY id"))]
        sids = [f"SM{i:032x}" for i in ids]
        c.execute(
            text("UPDATE sms_message SET status = 'sent', provider_id = :sid WHERE id = :id"),
            [{"sid": s, "id": i} for s, i in zip(sids, ids, strict=True)],
        )
    db = Database(engine)
    with db.session() as s:
        rule_records.set_fields(
            s,
            "TWILIO",
            {"SID": common.SID, "AuthCode": common.TOKEN, "PhoneNumber": "+13125550000"},
            active=True,
        )
    db.dispose()
    ours_port, peer_port = _port(), _port()
    public = f"http://127.0.0.1:{ours_port}"
    env = {**os.environ, "ERP_SMS_DATABASE_URL": url, "ERP_SMS_PUBLIC_URL": public}
    ours = _start(
        [sys.executable, "-m", "erp_sms.cli", "-v", "serve", "--port", str(ours_port)],
        env,
        "listening on",
    )
    peer_public = f"http://127.0.0.1:{peer_port}"
    peer = _start(
        [
            sys.executable,
            "-c",
            PEER % {"token": common.TOKEN, "public": peer_public, "port": peer_port},
        ],
        dict(os.environ),
        "listening",
    )
    try:
        theirs, mine = [], []
        # Rounds alternate; each is a new report for every text (sent, delivered, read:
        # recorded each time, never a repeat that changes nothing).
        for status in ("sent", "delivered", "read")[:ROUNDS]:
            theirs.append(_drive(peer_port, _forms(sids, status), peer_public))
            mine.append(_drive(ours_port, _forms(sids, status), public))
    finally:
        for proc in (ours, peer):
            proc.terminate()
            proc.wait(30)
    ratio = common.median(mine) / common.median(theirs)
    return {
        "work": f"status callbacks through `erp-sms serve`, {TEXTS:,} texts x {ROUNDS} rounds, "
        f"{CLIENTS} clients, {name}",
        "peers": "a Flask endpoint that checks the signature with twilio's RequestValidator, "
        f"same waitress (8 threads), alternated: {common.median(theirs):.0f}/s",
        "ours": f"{common.median(mine):.0f}/s ({ratio:.2f}x the endpoint); each recorded "
        "on its message in one transaction",
        "target": ">= 0.5x the endpoint",
        "met": ratio >= 0.5,
    }


def main() -> list[dict[str, Any]]:
    return [row(name) for name in common.databases()]
