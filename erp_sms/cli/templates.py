"""``erp-sms templates …``: list, show, set, preview, reset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import staff
from .. import templates as tpl
from ..errors import InputError
from .common import _user, staff_session


def _check_name(session: Any, name: str) -> str:
    return tpl.canonical_name(session, name)


@click.group("templates")
def group() -> None:
    """Text-message templates (SMS S2P, SMS PWOCOMP, SMS SESHIP, SMS SEDEL, …).

    \b
    Example:
      erp-sms templates list
      erp-sms templates preview "SMS SESHIP" --order SO-104233
    """


@group.command("list")
def templates_list() -> None:
    """Every template: where it comes from, its encoding and segments with sample data,
    and warnings.

    \b
    Example:
      erp-sms templates list
    """
    with staff_session(readonly=True) as s:
        rows = staff.template_rows(s)
    click.echo(f"{'name':<14} {'source':<10} {'encoding':<8} {'segments':>8}  warnings")
    for row in rows:
        c = row.check
        if c.error:
            click.echo(f"{row.name:<14} {row.origin:<10} {'-':<8} {'-':>8}  ERROR: {c.error}")
            continue
        line = f"{row.name:<14} {row.origin:<10} {c.encoding:<8} {c.segments:>8}  "
        click.echo(line + ("; ".join(c.warnings) or "none"))


@group.command("show")
@click.argument("name")
def templates_show(name: str) -> None:
    """Show a template's source and how it renders with sample data.

    \b
    Example:
      erp-sms templates show "SMS S2P"
    """
    with staff_session(readonly=True) as s:
        name = _check_name(s, name)
        src = tpl.load(s, name)
        c = staff.check_template(s, name, src.source)
    click.echo(f"# {name} ({src.origin})")
    click.echo(src.source)
    if c.error:
        click.echo(f"\nERROR: {c.error}")
        return
    click.echo(f"\n# with sample data: {c.encoding}, {c.segments} segment(s)\n{c.body}")
    for w in c.warnings:
        click.echo(f"warning: {w}")


@group.command("set")
@click.argument("name")
@click.option(
    "--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def templates_set(name: str, path: Path) -> None:
    """Replace a template with the text of FILE, after checking it (syntax with line
    numbers, unknown variables, sandbox).

    \b
    Example:
      erp-sms templates set "SMS S2P" --file s2p.txt
    """
    most = tpl.MAX_SOURCE * 4  # bytes: a template's most characters, 4 bytes each at most
    try:
        with path.open("rb") as fh:  # never more than that: a device never ends
            raw = fh.read(most + 1)
        if len(raw) > most:
            raise InputError(
                f"{path} is larger than a template can be ({tpl.MAX_SOURCE:,} characters): "
                "give the template's own text file"
            )
        body = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}; save it as UTF-8 text") from None
    with staff_session() as s:
        c = staff.save_template(s, name, body, by=_user())
    click.echo(f"{c.name} saved: {c.encoding}, {c.segments} segment(s) with sample data")
    for w in c.warnings:
        click.echo(f"warning: {w}")


@group.command("reset")
@click.argument("name")
def templates_reset(name: str) -> None:
    """Drop the staff override; the shipped default applies again.

    \b
    Example:
      erp-sms templates reset "SMS S2P"
    """
    with staff_session() as s:
        click.echo(staff.reset_template(s, name))


@group.command("preview")
@click.argument("name")
@click.option("--order", "number", required=True, help="Sales order number.")
def templates_preview(name: str, number: str) -> None:
    """Render a template for each recipient of a real order, with segment counts.

    \b
    Example:
      erp-sms templates preview "SMS S2P" --order SO-104233
    """
    with staff_session(readonly=True) as s:
        p = staff.preview(s, name, number)
    for note in p.notes:
        click.echo(f"# {note}" if "nobody" not in note else note)
    for line in p.lines:
        if line.contact is None:
            click.echo(f"- (order) {line.route}")
        elif line.error:
            click.echo(f"- {line.contact} → {line.route}\n  ERROR: {line.error}")
        else:
            click.echo(
                f"- {line.contact} → {line.route}\n  [{line.encoding}, {line.segments} "
                f"segment(s)] {line.body}"
            )
