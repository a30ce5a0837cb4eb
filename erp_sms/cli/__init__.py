"""``erp-sms``: the staff and operator command line (CONTRACT.md "Staff CLI").

Bad input exits non-zero with one clear line on stderr. The AuthCode is never printed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from .. import logs
from ..config import get_settings
from ..errors import ErpSmsError, InputError

F = TypeVar("F", bound=Callable[..., Any])


def _not_utf8(exc: UnicodeError) -> str:
    """One line for text that is not UTF-8: a file's bytes, or a value typed on the
    command line in another encoding."""
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"a file given is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position "
            f"{exc.start}): save it as UTF-8 and try again"
        )
    return "a value on the command line is not UTF-8 text: type it again in a UTF-8 terminal"


class ErpSmsGroup(click.Group):
    """A click group whose errors are one line on stderr (usage errors exit 2, input
    errors 2, other failures 1)."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(
                args, prog_name or "erp-sms", complete_var, standalone_mode=False, **extra
            )
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            _fail(f"{exc.format_message()}{hint}", 2)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except InputError as exc:
            _fail(exc.message, 2)
        except ErpSmsError as exc:
            _fail(exc.message, 1)
        except SQLAlchemyError as exc:
            from ..db import describe_error

            _fail(describe_error(exc, get_settings().database_url), 1)
        except UnicodeError as exc:
            _fail(_not_utf8(exc), 2)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:
            # Never a traceback for staff: one line, the details in the log with -v.
            logging.getLogger("erp_sms.cli").debug("unexpected error", exc_info=True)
            _fail(
                f"unexpected error: {type(exc).__name__}: {exc} (run again with -v to log "
                "the details, and report it)",
                1,
            )
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"erp-sms: {message}", err=True)
    sys.exit(code)


@click.group(
    cls=ErpSmsGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (INFO).")
@click.version_option(None, "--version", package_name="erp-sms", message="erp-sms %(version)s")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """erp-sms: text customers as their sales orders move.

    \b
    Example:
      erp-sms db upgrade
      erp-sms rules set TWILIO --sid AC… --auth-code … --phone-number 3125550100 --active
      erp-sms worker
    """
    logs.setup(verbose, get_settings().log_format)
    if ctx.invoked_subcommand not in ("demo", "doctor") and not ctx.resilient_parsing:
        # The host's integration module first, for every command (CONTRACT.md "Host
        # integration"): its lookup, events and templates. The demo uses its own data.
        from ..host import load_host_module

        load_host_module()


# -- the command groups, one module each ---------------------------------------------------


def _register() -> None:
    from . import (
        contacts,
        db,
        delivery,
        demo,
        messages,
        operations,
        options,
        replies,
        report,
        rules,
        sequences,
        templates,
        timeline,
        users,
    )

    for command in (
        db.db,
        rules.rules,
        options.options,
        templates.group,
        delivery.dispatch,
        delivery.worker,
        delivery.prices,
        messages.messages,
        report.report_cmd,
        contacts.group,
        replies.group,
        sequences.group,
        users.group,
        timeline.timeline,
        timeline.serve,
        operations.doctor,
        operations.purge,
        demo.demo,
    ):
        cli.add_command(command)


_register()


# -- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="erp-sms")


if __name__ == "__main__":
    main()
