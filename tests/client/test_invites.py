"""Registration with an invite, on a server whose registration is by invite (its default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailslot.client import Client
from mailslot.client.transport import now_ms
from mailslot.errors import InviteRequired
from mailslot.server.services.directory import new_invite
from tests.client.conftest import FAST_KDF, PASSPHRASE, ServerDb
from tests.conftest import INVITE_ONLY


@pytest.fixture
def server_settings() -> dict[str, object]:
    return INVITE_ONLY


async def register(live_server: Any, home: Path, handle: str, invite: str | None) -> Client:
    return await Client.register(
        home, live_server.url, handle, passphrase=PASSPHRASE, ca=live_server.ca, kdf=FAST_KDF, invite=invite
    )


async def test_register_needs_a_valid_unused_invite(
    live_server: Any, server_db: ServerDb, tmp_path: Path
) -> None:
    made = new_invite(now_ms(), uses=1, expires_in_ms=60_000)
    row = made.row
    server_db.execute(
        "INSERT INTO invites (token_hash, created_at_ms, expires_at_ms, uses_left, note) VALUES (?, ?, ?, ?, ?)",
        row.token_hash,
        row.created_at_ms,
        row.expires_at_ms,
        row.uses_left,
        row.note,
    )
    with pytest.raises(InviteRequired, match="invite"):
        await register(live_server, tmp_path / "a", "alice", None)
    with pytest.raises(InviteRequired):
        await register(live_server, tmp_path / "a", "alice", "inv_not-a-real-token")
    assert not (tmp_path / "a" / "device.key").exists()
    alice = await register(live_server, tmp_path / "a", "alice", made.token)
    try:
        assert (await alice.device_list()).version == 1 and alice.recovery_code is not None
    finally:
        await alice.close()
    with pytest.raises(InviteRequired):  # used up
        await register(live_server, tmp_path / "b", "bob", made.token)
