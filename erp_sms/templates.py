"""Text-message templates: Jinja2 in a sandbox with strict undefined variables.

Defaults are files in ``email_templates/`` (``SMS S2P`` -> ``SMS_S2P.txt``); a host
event may bring its own default body; a staff override in the database replaces either.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import ScalarSelect, select
from sqlalchemy.orm import Session

from .errors import InputError, TemplateError
from .models import TemplateOverride
from .segments import analyse, text_length

MAX_TEXT = 1600  # Twilio refuses a longer body (error 21617): never sent
MAX_SOURCE = 10_000  # characters of template source staff may save
# Bounds that keep any template cheap on the host's path: no value larger than this
# (characters or items), no more loop steps, no longer than this per render.
MAX_VALUE = 10_000
MAX_STEPS = 10_000
MAX_SECONDS = 0.5

_WIDE_FORMAT = re.compile(r"%[-+ #0]*\d{5,}|%[-+ #0]*\*|\{[^{}]*[:!][^{}]*\d{5,}[^{}]*\}")


class _Budget:
    def __init__(self, context: Mapping[str, Any] | None = None) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + MAX_SECONDS
        self.context = context or {}

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateError(f"loops more than {MAX_STEPS:,} times; simplify the template")
        if self.steps % 64 == 0 and time.monotonic() > self.deadline:
            raise TemplateError(f"takes longer than {MAX_SECONDS} s to render; simplify it")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "erp_sms_template_budget", default=None
)


def _tick() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick()


def _check_size(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple | dict | set) and len(value) > MAX_VALUE:
        raise TemplateError(
            f"builds a value of {len(value):,} characters or items (limit {MAX_VALUE:,})"
        )
    return value


def _check_args(args: Iterable[Any]) -> None:
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_VALUE:
            raise TemplateError(
                f"uses the number {a}, larger than {MAX_VALUE:,}; SMS texts need no such sizes"
            )
        if isinstance(a, str) and _WIDE_FORMAT.search(a):
            raise TemplateError("uses a format width over 9,999 characters")


def _bounded_iter(value: Any) -> Iterator[Any]:
    for item in value:
        _tick()
        yield item


def _bounded_range(*args: int) -> range:
    _check_args(args)
    r = range(*args)
    _check_size(r)
    return r


def _bounded_filter(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)  # keeps jinja's pass_context / pass_environment marks
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args(a for a in (*args, *kwargs.values()) if not hasattr(a, "environment"))
        return _check_size(f(*args, **kwargs))

    return wrapper


def and_list(values: Iterable[Any], word: str = "and") -> str:
    """``["PWO-1", "PWO-2", "PWO-3"]`` -> ``"PWO-1, PWO-2 and PWO-3"`` (a template filter:
    ``{{ work_orders|map(attribute="number")|and_list }}``)."""
    items = [str(v) for v in values]
    if len(items) < 2:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


class BoundedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox with bounds on time and size: ``{{ 'x' * 100000000 }}`` or a loop
    nested three deep is refused with a ``TemplateError`` instead of stalling the host's
    transaction (or staff's save) for minutes."""

    # Intercepting these also stops the optimizer from folding them at compile time.
    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters["and_list"] = and_list
        self.filters = {name: _bounded_filter(f) for name, f in self.filters.items()}
        self.filters["erp_sms_bounded_iter"] = _bounded_iter
        self.globals["range"] = _bounded_range

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise TemplateError(f"raises to the power {right}; too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    _check_size(range(len(seq) * max(n, 0)))
        if operator == "%" and isinstance(left, str):
            _check_args([left])
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args((*args, *kwargs.values()))
        if getattr(__obj, "__name__", "") in ("format", "format_map"):
            # the sandbox wraps str.format; the format string is the bound method's self
            bound = getattr(__obj, "__wrapped__", __obj)
            _check_args([getattr(bound, "__self__", "")])
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        # Every {% for %} counts its steps against the render's budget. A filter (not a
        # global) so that a template cannot redefine it.
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "erp_sms_bounded_iter", [], [], None, None)
        return tree


def _path_of(context: Mapping[str, Any], target: object, depth: int = 3) -> str | None:
    """The dotted name under which ``target`` sits in the render's context."""
    for key, value in context.items():
        if value is target:
            return str(key)
        if depth > 1 and isinstance(value, Mapping):
            inner = _path_of(value, target, depth - 1)
            if inner:
                return f"{key}.{inner}"
    return None


class _NamedUndefined(jinja2.StrictUndefined):
    """An unknown variable's error names it as staff wrote it (``order.nmber``), not in
    Jinja's words ("'dict object' has no attribute 'nmber'")."""

    @property
    def _undefined_message(self) -> str:
        # Every way of using an undefined value (str, iter, len…) raises with this.
        name, owner = self._undefined_name, self._undefined_obj
        if owner is jinja2.utils.missing:
            path = str(name) if name is not None else (self._undefined_hint or "?")
        else:
            budget = _budget.get()
            where = _path_of(budget.context, owner) if budget else None
            if where is None:
                return f"{name!r} is not a variable of {type(owner).__name__} values"
            path = f"{where}.{name}"
        return f"unknown variable {path}"


_env = BoundedSandbox(undefined=_NamedUndefined, autoescape=False, keep_trailing_newline=False)

# Defaults given by host-registered events (name -> body), besides the files.
_registered_defaults: dict[str, str] = {}


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


@lru_cache(maxsize=256)
def file_default(name: str) -> str | None:
    """The packaged default body of template ``name`` (read once per process: package
    data does not change under a running process)."""
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


def override_query(name: str) -> ScalarSelect[str | None]:
    """The staff override's body of template ``name`` (NULL when none), as a scalar
    subquery the host path reads together with its other settings."""
    return select(TemplateOverride.body).where(TemplateOverride.name == name).scalar_subquery()


def load(session: Session, name: str) -> TemplateSource:
    return source_from(name, session.execute(select(override_query(name))).scalar())


def source_from(name: str, override: str | None) -> TemplateSource:
    """The template to use: the staff override if there is one, else the default."""
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
def refers_to(source: str, name: str) -> bool:
    """Whether template ``source`` uses the variable ``name`` at all (True when it does
    not parse: the caller renders it and reports the error)."""
    try:
        return name in jinja2.meta.find_undeclared_variables(_env.parse(source))
    except jinja2.TemplateSyntaxError:
        return True


@lru_cache(maxsize=256)
def compile_template(source: str) -> jinja2.Template:
    if len(source) > MAX_SOURCE:
        raise TemplateError(
            f"the template is {len(source):,} characters long; keep it under {MAX_SOURCE:,} "
            f"(a text may be {MAX_TEXT:,} characters at most)"
        )
    try:
        return _env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error on line {exc.lineno}: {exc.message}") from None
    except TemplateError as exc:  # a bound hit while folding constants
        raise TemplateError(exc.message) from None


def _render_bounded(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """Render, stopping as soon as the text is far past the limit or a bound is hit."""
    token = _budget.set(_Budget(context))
    try:
        parts: list[str] = []
        size = 0
        for chunk in template.generate(**context):
            parts.append(chunk)
            size += len(chunk)
            if size > MAX_VALUE:
                raise TemplateError(f"renders to more than {MAX_VALUE:,} characters")
        return "".join(parts)
    finally:
        _budget.reset(token)


def render(source: str, context: Mapping[str, Any], name: str = "template") -> Rendered:
    """Render ``source`` with ``context``; every failure is a ``TemplateError`` — also a
    text over 1,600 characters (Twilio's maximum), which is never sent."""
    try:
        template = compile_template(source) if source else None
        body = _render_bounded(template, context).strip() if template else ""
        # One line break: a CR LF pair is one symbol that Twilio's calculator counts as
        # UCS-2, and a bare CR shows as nothing on some phones.
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: syntax error on line {exc.lineno}: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{name}: refused by the sandbox ({exc})") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(
            f"{name}: {exc}; use one of the variables listed for this template"
        ) from None
    except TemplateError as exc:
        raise TemplateError(f"{name}: {exc.message}") from None
    except Exception as exc:  # a template can raise anything (division by zero, …)
        raise TemplateError(f"{name}: {type(exc).__name__}: {exc}") from None
    if not body:
        raise TemplateError(f"{name}: renders to an empty message")
    if text_length(body) > MAX_TEXT:
        raise TemplateError(
            f"{name}: renders to {text_length(body):,} characters; Twilio's maximum is "
            f"{MAX_TEXT:,} (error 21617; counted as Twilio does, an emoji as two): shorten "
            "the template"
        )
    info = analyse(body)
    return Rendered(body, info.encoding, info.segments)


def check(source: str, context: Mapping[str, Any], name: str = "template") -> Rendered:
    """Validate a template before saving: syntax (with line number), unknown variables
    and sandbox escapes, by rendering it against ``context`` (sample data)."""
    try:
        compile_template(source)
    except TemplateError as exc:
        raise TemplateError(f"{name}: {exc.message}") from None
    return render(source, context, name)


# The events' and sequences' templates, as the event registry adds them.
_names: dict[str, None] = {}


def register_name(name: str) -> None:
    """List template ``name`` (an event's or a sequence step's)."""
    _names.setdefault(name)


def known_names(session: Session) -> list[str]:
    """Every template name: the events' and sequences' templates and staff's own."""
    return sorted(set(_names) | set(session.scalars(select(TemplateOverride.name))))


def canonical_name(session: Session, name: str) -> str:
    """The template ``name`` as it is spelled (names match without regard to case), or
    ``InputError`` listing the templates and how to add one."""
    known = known_names(session)
    for k in known:
        if k.lower() == name.lower():
            return k
    raise InputError(
        f"unknown template {name!r}; templates: {', '.join(known)} (add one with "
        f"`erp-sms templates set {name!r} --file F`)"
    )
