"""`mailslot server init` and `mailslot serve`: setting up and running a server node."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from mailslot.errors import ConfigError
from mailslot.server.config import CONFIG_NAME, ServerConfig, load_config, write_config
from mailslot.server.runner import serve as run_server
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
    """Write DATA_DIR/config.toml and a self-signed TLS certificate in DATA_DIR/tls/."""
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


@click.command("serve")
@DATA_DIR
@click.option("--host", default=None, help="Override the configured address.")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Override the configured port.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(data_dir: Path, host: str | None, port: int | None, log_level: str) -> None:
    """Serve the HTTPS API and WebSocket from DATA_DIR until interrupted."""
    config = load_config(data_dir.resolve()).with_overrides(host=host, port=port)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_server(config, log_level)
