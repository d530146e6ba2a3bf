"""`mailslot demo`: a real server and five devices on this machine, narrated."""

from __future__ import annotations

import asyncio

import click

from mailslot.demo import run_demo


@click.command("demo")
def demo() -> None:
    """Run a server on a free loopback port and show alice, bob and carol messaging."""
    asyncio.run(run_demo())
