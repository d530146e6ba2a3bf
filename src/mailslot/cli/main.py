"""The ``mailslot`` command: global options, the command tree, and error handling.

Every ``MailslotError`` a command raises becomes ONE line on standard error (``error: ...``)
and the error's ``exit_code``; Ctrl-C exits 130. A traceback means a bug in mailslot, never a
user's mistake. The client library's warnings (a dropped message, an attachment not saved)
are ``warning: ...`` lines on standard error; its device-alert log lines are left out, because
the commands show alerts themselves (``receive``, ``device alerts``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mailslot import __version__
from mailslot.cli.account_cmd import account
from mailslot.cli.attachment_cmd import attachment
from mailslot.cli.device_cmd import device
from mailslot.cli.identity_cmd import identity
from mailslot.cli.message_cmd import history, receive, send
from mailslot.cli.output import Mode, Output
from mailslot.client import Client
from mailslot.client.alerts import ALERT_LOGGER
from mailslot.client.models import TRUST_POLICIES, TrustPolicy
from mailslot.errors import WIRE_CODES, ConfigError, InputError, MailslotError

PASSPHRASE_ENV = "MAILSLOT_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret
HOME_ENV = "MAILSLOT_HOME"
TRUST_ENV = "MAILSLOT_TRUST_NEW_IDENTITIES"
INTERRUPTED = 130


def _exit_code_epilog() -> str:
    """The exit codes, read off the error classes so the help cannot drift from the code."""
    by_code: dict[int, list[str]] = {0: ["success"]}
    for cls in sorted(set(WIRE_CODES.values()), key=lambda c: c.__mro__[::-1].index(c)):
        by_code.setdefault(cls.exit_code, []).append(cls.code.replace("_", " "))
    by_code.setdefault(INTERRUPTED, []).append("interrupted (Ctrl-C)")
    lines = ["\b", "Exit codes:"]
    lines += [f"  {code:>3}  {', '.join(names)}" for code, names in sorted(by_code.items())]
    return "\n".join(lines)


@dataclass
class Settings:
    """The global options, handed to every command through the click context."""

    home: Path
    output: Output
    passphrase_file: Path | None
    trust_new_identities: TrustPolicy = "on-first-use"

    def open_client(self, passphrase: bytes) -> Client:
        """This device, unlocked, with the trust policy of ``--trust-new-identities``."""
        return Client.open(self.home, passphrase=passphrase, trust_new_identities=self.trust_new_identities)

    def passphrase(self, *, new: bool = False) -> bytes:
        """The keystore passphrase: from the file, else the environment, else a TTY prompt."""
        if self.passphrase_file is not None:
            return _read_passphrase_file(self.passphrase_file)
        from_env = os.environ.get(PASSPHRASE_ENV)
        if from_env:
            return from_env.encode("utf-8")
        if not sys.stdin.isatty():
            raise ConfigError(
                f"no passphrase: use --passphrase-file FILE or set {PASSPHRASE_ENV} "
                "(standard input is not a terminal, so mailslot cannot ask)"
            )
        text: str = click.prompt(
            "New passphrase" if new else "Passphrase",
            hide_input=True,
            confirmation_prompt=new,
            err=True,
        )
        if not text:
            raise InputError("the passphrase must not be empty")
        return text.encode("utf-8")


def _read_passphrase_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the passphrase file {path}: {exc.strerror}") from exc
    data = data.rstrip(b"\r\n")
    if not data:
        raise ConfigError(f"the passphrase file {path} is empty")
    return data


# The operator's commands import the whole server; loaded only when named, so that the
# client commands start quickly.
_OPERATOR_COMMANDS = {
    "server": ("mailslot.cli.server_cmd", "server"),
    "serve": ("mailslot.cli.server_cmd", "serve"),
    "admin": ("mailslot.cli.admin_cmd", "admin"),
    "demo": ("mailslot.cli.demo_cmd", "demo"),
}


class MailslotGroup(click.Group):
    """A group that turns mailslot errors and Ctrl-C into one line and an exit code, and
    loads the operator's commands on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_OPERATOR_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _OPERATOR_COMMANDS and cmd_name not in self.commands:
            module, name = _OPERATOR_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), name)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailslotError as exc:
            _fail(ctx, exc)
        except (KeyboardInterrupt, click.Abort):
            click.echo("error: interrupted", err=True)
            ctx.exit(INTERRUPTED)
        except BaseExceptionGroup as group:
            # Concurrent work (a task group) wraps what it raises; mailslot errors inside are
            # still the user's one line (the first one: the rest followed from it).
            first = _first_mailslot_error(group)
            if first is None:
                raise
            _fail(ctx, first)


def _fail(ctx: click.Context, exc: MailslotError) -> None:
    click.echo(f"error: {_one_line(exc.message)}", err=True)
    ctx.exit(exc.exit_code)


def _first_mailslot_error(group: BaseExceptionGroup[BaseException]) -> MailslotError | None:
    """The first mailslot error in ``group`` if it holds nothing else (else a bug: None)."""
    matched, rest = group.split(MailslotError)
    if matched is None or rest is not None:
        return None
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, MailslotError) else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _ClientWarnings(logging.Handler):
    """The client library's warnings as ``warning: ...`` lines on the current standard error."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == ALERT_LOGGER:
            return  # shown by the commands as alerts, once, with their colours
        click.echo(f"warning: {_one_line(record.getMessage())}", err=True)


def _show_client_warnings() -> None:
    logger = logging.getLogger("mailslot.client")
    for old in [h for h in logger.handlers if isinstance(h, _ClientWarnings)]:
        logger.removeHandler(old)
    logger.addHandler(_ClientWarnings())


@click.group(
    cls=MailslotGroup, epilog=_exit_code_epilog(), context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=HOME_ENV,
    default=Path("~/.mailslot"),
    show_default=True,
    help=f"This device's directory (keys, local store). Env: {HOME_ENV}.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format; json prints one object per line.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Read the key passphrase from FILE (else env {PASSPHRASE_ENV}, else a prompt).",
)
@click.option(
    "--trust-new-identities",
    type=click.Choice(TRUST_POLICIES),
    envvar=TRUST_ENV,
    default="on-first-use",
    show_default=True,
    help="A handle's first account key: trust it (on-first-use), or not until `identity trust` "
    f"(never); always also accepts a CHANGED key, unverified (for bots). Env: {TRUST_ENV}.",
)
@click.version_option(__version__, prog_name="mailslot")
@click.pass_context
def cli(
    ctx: click.Context,
    home: Path,
    output: Mode,
    passphrase_file: Path | None,
    trust_new_identities: TrustPolicy,
) -> None:
    """mailslot: end-to-end encrypted messaging between all your devices."""
    _show_client_warnings()
    ctx.obj = Settings(home.expanduser(), Output(output), passphrase_file, trust_new_identities)


cli.add_command(account)
cli.add_command(device)
cli.add_command(send)
cli.add_command(receive)
cli.add_command(history)
cli.add_command(identity)
cli.add_command(attachment)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="mailslot")


if __name__ == "__main__":
    main()
