"""Text-message templates: Jinja2 in a sandbox with strict undefined variables.

Defaults are files in ``email_templates/`` (``SMS S2P`` -> ``SMS_S2P.txt``); a host
event may bring its own default body; a staff override in the database replaces either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import TemplateError
from .models import TemplateOverride
from .segments import UCS2, analyse

_env = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)

# Defaults given by host-registered events (name -> body), besides the files.
_registered_defaults: dict[str, str] = {}

STOP_WORDS = ("STOP", "UNSUBSCRIBE", "OPT OUT", "OPTOUT")


@dataclass(frozen=True)
class Rendered:
    body: str
    encoding: str
    segments: int


@dataclass(frozen=True)
class TemplateSource:
    name: str
    source: str
    origin: str  # "override" | "file" | "registered"


def file_name(name: str) -> str:
    return name.replace(" ", "_") + ".txt"


def file_default(name: str) -> str | None:
    path = resources.files("erp_sms.email_templates").joinpath(file_name(name))
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip()


def register_default(name: str, body: str) -> None:
    """Give a host event's template a default body (a staff override still wins)."""
    compile_template(body)
    _registered_defaults[name] = body.strip()


def default_source(name: str) -> TemplateSource | None:
    body = file_default(name)
    if body is not None:
        return TemplateSource(name, body, "file")
    if name in _registered_defaults:
        return TemplateSource(name, _registered_defaults[name], "registered")
    return None


def load(session: Session, name: str) -> TemplateSource:
    override = session.execute(
        select(TemplateOverride.body).where(TemplateOverride.name == name)
    ).scalar_one_or_none()
    if override is not None:
        return TemplateSource(name, override, "override")
    default = default_source(name)
    if default is None:
        raise TemplateError(
            f"template {name!r} does not exist: add it with `erp-sms templates set "
            f"{name!r} --file FILE`"
        )
    return default


@lru_cache(maxsize=256)
def compile_template(source: str) -> jinja2.Template:
    try:
        return _env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error on line {exc.lineno}: {exc.message}") from None


def render(source: str, context: Mapping[str, Any], name: str = "template") -> Rendered:
    """Render ``source`` with ``context``; every failure is a ``TemplateError``."""
    template = compile_template(source) if source else None
    try:
        body = template.render(**context).strip() if template else ""
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{name}: refused by the sandbox ({exc})") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{name}: unknown variable — {exc}") from None
    except TemplateError as exc:
        raise TemplateError(f"{name}: {exc.message}") from None
    except Exception as exc:  # a template can raise anything (division by zero, …)
        raise TemplateError(f"{name}: {type(exc).__name__}: {exc}") from None
    if not body:
        raise TemplateError(f"{name}: renders to an empty message")
    info = analyse(body)
    return Rendered(body, info.encoding, info.segments)


def warnings_for(body: str) -> list[str]:
    """Staff warnings (not errors) about a rendered message."""
    out = []
    upper = body.upper()
    if not any(w in upper for w in STOP_WORDS):
        out.append("no opt-out text: add e.g. 'Reply STOP to opt out'")
    if "HELP" not in upper:
        out.append("no HELP text: add e.g. 'HELP for help'")
    info = analyse(body)
    if info.segments > 1:
        out.append(f"{info.segments} segments ({info.units} {info.encoding} units): shorten it")
    if info.encoding == UCS2:
        chars = " ".join(repr(c) for c in info.non_gsm)
        out.append(f"characters outside GSM-7 force UCS-2 (70 per segment): {chars}")
    return out


def check(source: str, context: Mapping[str, Any], name: str = "template") -> Rendered:
    """Validate a template before saving: syntax (with line number), unknown variables
    and sandbox escapes, by rendering it against ``context`` (sample data)."""
    try:
        compile_template(source)
    except TemplateError as exc:
        raise TemplateError(f"{name}: {exc.message}") from None
    return render(source, context, name)
