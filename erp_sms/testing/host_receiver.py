"""A host's webhook endpoint on loopback, for the demo and tests: it verifies every
delivery with the ``standardwebhooks`` package (as a host would), keeps the events it
accepted, and can play an outage (``status`` 503)."""

from __future__ import annotations

import base64
import os
import threading
from typing import Any

from standardwebhooks import Webhook
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


def new_secret() -> str:
    """A fresh ``whsec_…`` signing secret (32 random bytes)."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class HostReceiver:
    """``with HostReceiver(secret) as r:`` — POST ``r.url``; ``r.accepted`` holds the
    verified events (``type``, ``timestamp``, ``data``), ``r.ids`` their webhook-ids."""

    def __init__(self, secret: str) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.refused = 0
        self.forged = 0
        self.status = 204
        self._verify = Webhook(secret)
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/erp-sms"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._answer(Request(environ))(environ, start_response)

    def _answer(self, request: Request) -> Response:
        body = request.get_data()
        try:
            event = self._verify.verify(body, dict(request.headers))
        except Exception as exc:  # not signed as the specification says
            self.forged += 1
            return Response(f"bad signature: {exc}", status=400)
        if self.status >= 300:
            self.refused += 1
            return Response("down for maintenance", status=self.status)
        self.accepted.append(event)
        self.ids.append(request.headers["webhook-id"])
        return Response(status=self.status)

    def __enter__(self) -> HostReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._thread.join()
