"""The hosted opt-out page's links: one per recipient, short (a token of 10 characters
under ``ERP_SMS_PUBLIC_URL``), unguessable (an HMAC of the number with
``ERP_SMS_SECRET_KEY``), with nothing personal in it. The token is kept on each text
that carries it, so the page finds the number; a token no text carries, or one that does
not match its number's HMAC, is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from .catalog import link_scanners
from .config import Settings

TOKEN_LENGTH = 10  # 60 bits, URL-safe base64: every character in GSM-7's basic set
PATH = "/o/"


def _key(settings: Settings) -> bytes | None:
    return settings.secret_key.encode() if settings.secret_key else None


def base(settings: Settings) -> str:
    """The page's address up to the token, or "" when it cannot be offered (no public
    URL to serve it at, or no secret key to sign with)."""
    if not settings.public_url or not settings.secret_key:
        return ""
    return settings.public_url.rstrip("/") + PATH


def _mac(key: bytes, what: str) -> str:
    digest = hmac.new(key, what.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()


def token(settings: Settings, number: str) -> str:
    """The opt-out token of ``number`` (E.164): the same every time for this key."""
    key = _key(settings)
    if key is None:
        raise ValueError("no ERP_SMS_SECRET_KEY to sign opt-out links with")
    return _mac(key, f"optout:{number}")[:TOKEN_LENGTH]


def matches(settings: Settings, number: str, given: str) -> bool:
    """Whether ``given`` is ``number``'s token (compared in constant time)."""
    key = _key(settings)
    return key is not None and hmac.compare_digest(token(settings, number), given)


def form_key(settings: Settings, given: str) -> str:
    """What the page's form carries back: proof it came from the page for this token,
    without a session (no cookie to steal, nothing to guess)."""
    key = _key(settings)
    return _mac(key, f"form:{given}")[:22] if key else ""


SLOT = "0" * TOKEN_LENGTH  # what the wording leaves for the token (``wording.LINK_SLOT``)


def fill(settings: Settings, body: str, number: str | None) -> tuple[str, str | None]:
    """``body`` with the recipient's own token in the opt-out link's slot, and the token
    (None when the body has no slot)."""
    if number is None or not settings.secret_key or f"{PATH}{SLOT}" not in body:
        return body, None
    mine = token(settings, number)
    return body.replace(f"{PATH}{SLOT}", f"{PATH}{mine}"), mine


# -- short links with clicks ----------------------------------------------------------------

SHORT_PATH = "/l/"
CODE_LENGTH = 8  # a text's code; the link adds the URL's place in the text (one digit)
CODE_SLOT = "1" * CODE_LENGTH  # what the planner replaces with each text's own code
_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")
MOST_LINKS = 9  # one digit for a URL's place


def shorten(settings: Settings, body: str) -> tuple[str, list[str]]:
    """``body`` with each http(s) URL (not already erp-sms's own) as a short link under
    ERP_SMS_PUBLIC_URL with ``CODE_SLOT`` for the text's code, and the URLs in order;
    unchanged when short links cannot be offered (no public URL or no key)."""
    prefix = base_short(settings)
    if not prefix:
        return body, []
    own = settings.public_url.rstrip("/") if settings.public_url else ""
    urls: list[str] = []

    def swap(found: re.Match[str]) -> str:
        url = found.group(0)
        if url.startswith(own) or len(urls) >= MOST_LINKS:
            return url
        urls.append(url)
        return f"{prefix}{CODE_SLOT}{len(urls)}"

    return _URL.sub(swap, body), urls


def base_short(settings: Settings) -> str:
    if not settings.public_url or not settings.secret_key:
        return ""
    return settings.public_url.rstrip("/") + SHORT_PATH


def code(settings: Settings, message_key: str) -> str:
    """A text's short-link code (by its idempotency key): unguessable, nothing in it."""
    key = _key(settings)
    if key is None:
        raise ValueError("no ERP_SMS_SECRET_KEY to sign short links with")
    return _mac(key, f"link:{message_key}")[:CODE_LENGTH]


def fill_code(settings: Settings, body: str, message_key: str) -> tuple[str, str | None]:
    """``body`` with the text's own code in its short links' slot, and the code."""
    slot = f"{SHORT_PATH}{CODE_SLOT}"
    if slot not in body or not settings.secret_key:
        return body, None
    mine = code(settings, message_key)
    return body.replace(slot, f"{SHORT_PATH}{mine}"), mine


def is_scanner(method: str, agent: str | None) -> bool:
    """A request that is not a person clicking: HEAD, or a known preview or scanner."""
    if method == "HEAD":
        return True
    text = (agent or "").lower()
    return not text or any(part in text for part in link_scanners())
