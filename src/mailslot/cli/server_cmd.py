"""`mailslot server init|check-config|migrate` and `mailslot serve`: setting up, checking,
upgrading and running a server node."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.text import Text

from mailslot.cli.output import Output
from mailslot.errors import ConfigError
from mailslot.server import preflight
from mailslot.server.config import CONFIG_NAME, ServerConfig, environment_overrides, load_config, write_config
from mailslot.server.runner import serve as run_server
from mailslot.server.storage.migrations import migrate as migrate_schema
from mailslot.server.tls import DEFAULT_NAMES, write_self_signed

DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    envvar="MAILSLOT_DATA_DIR",
    help="Server data directory (config, database, TLS files).",
)


@click.group("server")
def server() -> None:
    """Set up a mailslot server."""


@server.command("init")
@DATA_DIR
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@click.option("--name", "names", multiple=True, help="Extra DNS name or IP for the certificate.")
@click.option("--force", is_flag=True, help="Overwrite an existing configuration.")
def init(data_dir: Path, host: str, port: int, names: tuple[str, ...], force: bool) -> None:
    """Write DATA_DIR/config.toml and a self-signed TLS certificate in DATA_DIR/tls/.

    Registration is by invite (`registration = "invite"`): accounts register with a token from
    `mailslot admin invite create`."""
    if (data_dir / CONFIG_NAME).exists() and not force:
        raise ConfigError(f"{data_dir / CONFIG_NAME} exists; use --force to overwrite it")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    config = ServerConfig(data_dir=data_dir.resolve(), host=host, port=port)
    write_self_signed(config.cert_path, config.key_path, (*DEFAULT_NAMES, *names))
    path = write_config(config)
    click.echo(f"wrote {path}")
    click.echo(f"wrote {config.cert_path} (clients pass it with --ca)")
    click.echo(f"start it with: mailslot serve --data-dir {data_dir}")
    click.echo(
        f"registration needs an invite: make one with mailslot admin invite create --data-dir {data_dir}"
        ' (or set registration = "open" in config.toml)'
    )


@click.command("serve")
@DATA_DIR
@click.option("--host", default=None, help="Override the configured address.")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Override the configured port.")
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Override the configured metrics port (0: any free port).",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--log-format",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "json", "text"]),
    help="Log lines on stderr: JSON objects, or text; auto: text on a terminal, JSON otherwise.",
)
def serve(
    data_dir: Path,
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the HTTPS API and WebSocket from DATA_DIR until interrupted."""
    config = load_config(data_dir.resolve()).with_overrides(host=host, port=port, metrics_port=metrics_port)
    run_server(config, log_level, log_format)


def _output() -> Output:
    """Output in the root group's ``-o`` format (text or json)."""
    mode = click.get_current_context().find_root().params.get("output")
    return Output("json" if mode == "json" else "text")


def _registration(config: ServerConfig) -> str:
    if config.registration == "open":
        return "registration open to anyone who reaches the server"
    return "registration by invite (mailslot admin invite create)"


@server.command("check-config")
@DATA_DIR
def check_config(data_dir: Path) -> None:
    """Check DATA_DIR's configuration, environment overrides included, changing nothing.

    The TLS files, the database (a newer schema is a problem; nothing is migrated), the blob
    store and the wake-up bus (Redis must answer). Exits 0 when all is well, else 3 with one
    `error:` line per problem on standard error.
    """
    data_dir = data_dir.resolve()
    try:
        config = load_config(data_dir)
    except ConfigError as exc:
        checks = [preflight.Check("config", False, exc.message)]
    else:
        variables = environment_overrides()
        shown = f"; environment: {', '.join(variables)}" if variables else ""
        checks = [
            preflight.Check("config", True, f"{data_dir / CONFIG_NAME}; {_registration(config)}{shown}"),
            *asyncio.run(preflight.run(config, datetime.now(UTC))),
        ]
    problems = [check for check in checks if not check.ok]
    out = _output()
    if out.mode == "json":
        out.json({"ok": not problems, "checks": [dataclasses.asdict(check) for check in checks]})
    else:
        for check in checks:
            out.text(Text(f"{'ok' if check.ok else 'FAIL':<6}{check.name:<9}{check.detail}"))
    for check in problems:
        click.echo(f"error: {check.name}: {' '.join(check.detail.split())}", err=True)
    if problems:
        click.get_current_context().exit(ConfigError.exit_code)


@server.command("migrate")
@DATA_DIR
def migrate(data_dir: Path) -> None:
    """Apply pending schema migrations to DATA_DIR's database, then exit.

    Starting a node migrates too; this makes the upgrade a step of its own (before new nodes
    roll out). A PostgreSQL blob store in another database is migrated as well. A database
    written by a newer mailslot is refused (exit 3) and left as it is.
    """
    from mailslot.server.storage.postgres import redacted  # psycopg only when migrating

    config = load_config(data_dir.resolve())
    targets = [("", config.storage_url)]
    blob_url = config.blob_store_url
    if blob_url.startswith(("postgresql://", "postgres://")) and blob_url != config.storage_url:
        targets.append(("blob database ", blob_url))
    out = _output()
    for what, url in targets:
        before, after = asyncio.run(migrate_schema(url))
        note = " (up to date)" if before == after else ""
        out.result(
            {"database": redacted(url), "before": before, "after": after},
            f"{what}schema version {before} -> {after}{note}",
        )
