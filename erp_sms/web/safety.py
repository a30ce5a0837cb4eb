"""What keeps the staff pages safe, in one place (CONTRACT.md "Staff pages: roles and
safety"): the role each action needs, the security headers, same-site redirects and
input no database takes.

The headers are a few lines rather than flask-talisman: we need five fixed headers and
no per-view options, and a host that mounts the blueprint keeps its own app's policy
for its own pages.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response, request
from flask_login import current_user

from .. import users

# The role each form needs, by endpoint. Reading (GET) needs only a sign-in (viewer);
# a form not listed here needs admin, so a new form is safe until someone decides.
ACTIONS: dict[str, str] = {
    "account_save": "viewer",  # one's own time zone
    "template_preview": "viewer",  # reads only
    "log_action": "operator",
    "contact_consent": "operator",
    "contact_text": "operator",
    "reply_done": "operator",
    "reply_answer": "operator",
}
# Forms anyone may post: signing in and out.
OPEN = {"sign_in", "sign_out", "static"}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def needed_role(endpoint: str | None, method: str) -> str | None:
    """The role a request needs (None: none beyond what sign-in asks)."""
    short = (endpoint or "").rpartition(".")[2]
    if short in OPEN:
        return None
    if method in ("GET", "HEAD", "OPTIONS"):
        return "viewer"
    return ACTIONS.get(short, "admin")


def refused() -> str | None:
    """Why the signed-in staff member may not make this request, or None if they may."""
    if not current_user.is_authenticated:
        return None  # sign-in (login_required) answers first
    needed = needed_role(request.endpoint, request.method)
    if needed is None or users.may(getattr(current_user, "role", None), needed):
        return None
    return (
        f"Your role ({current_user.role}) may not do that: it needs {needed}. "
        "An admin can change roles (`erp-sms users role NAME ROLE`)."
    )


def add_headers(response: Response) -> Response:
    """The security headers on every answer; no caching of what a signed-in user saw."""
    h = response.headers
    h["Content-Security-Policy"] = CSP
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"  # for browsers without CSP frame-ancestors
    h["Referrer-Policy"] = "same-origin"
    if (request.endpoint or "").rpartition(".")[2] != "static":
        h["Cache-Control"] = "no-store"
    return response


def same_site(target: str | None, default: str) -> str:
    """``target`` when it is a path on this site, else ``default``: never an open
    redirect. Control characters and backslashes are refused outright: browsers drop a
    tab in ``/\\t/evil.example`` and read ``\\`` as ``/``, making either a host."""
    if not target or any(c < " " or c in "\\\x7f" for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return default
    if parts.path.startswith("//"):
        return default
    return target


def unreadable_input() -> str | None:
    """A sentence when a field holds what no database stores (a NUL character), else
    None — PostgreSQL refuses NUL in text, which was a 500."""
    for values in (request.args, request.form):
        for key, value in values.items(multi=True):
            if "\x00" in value:
                return f"{key}: remove the NUL character (\\0) from the value and try again"
    return None
