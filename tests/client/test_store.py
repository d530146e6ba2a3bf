"""The device's local store: pinning, rollback refusal, de-duplication, history, schema."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailslot.client.models import Direction, HistoryEntry
from mailslot.client.store import SCHEMA_VERSION, Store
from mailslot.errors import KeyChanged, SchemaTooNew, VerificationError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "home")
    yield opened
    opened.close()


def _entry(
    mid: str, members: tuple[str, ...], sender: str, sent_at: int, direction: Direction = "in"
) -> HistoryEntry:
    return HistoryEntry(
        id=mid,
        members=members,
        sender=sender,
        sender_device="ab" * 16,
        sent_at_ms=sent_at,
        accepted_at_ms=sent_at + 5,
        text=f"text of {mid}",
        direction=direction,
        stored_at_ms=sent_at + 10,
    )


def test_file_is_private(tmp_path: Path) -> None:
    Store.open(tmp_path / "home").close()
    assert stat.S_IMODE((tmp_path / "home" / Store.FILENAME).stat().st_mode) == 0o600


def test_first_key_is_pinned_and_a_change_raises_key_changed(store: Store) -> None:
    store.pin("bob", b"k" * 32, now_ms=1)
    store.pin("bob", b"k" * 32, now_ms=2)  # same key again: fine
    assert store.pinned_key("bob") == b"k" * 32
    with pytest.raises(KeyChanged, match="'bob'") as info:
        store.pin("bob", b"x" * 32, now_ms=3)
    assert info.value.details == {"handle": "bob"}
    assert store.pinned_key("bob") == b"k" * 32
    assert store.pinned_key("carol") is None


def test_device_list_versions_only_go_up(store: Store) -> None:
    store.save_device_list("bob", 2, b"list-v2")
    store.save_device_list("bob", 2, b"list-v2")  # the same list again is not a change
    store.save_device_list("bob", 3, b"list-v3")
    assert store.device_list("bob") == (3, b"list-v3")
    with pytest.raises(VerificationError, match="rollback"):
        store.save_device_list("bob", 2, b"list-v2")
    with pytest.raises(VerificationError, match="same version"):
        store.save_device_list("bob", 3, b"another-v3")
    assert store.device_list("bob") == (3, b"list-v3")


def test_duplicate_message_is_recorded_once(store: Store) -> None:
    entry = _entry("01" * 16, ("alice", "bob"), "bob", 100)
    assert not store.is_seen(entry.id)
    assert store.add_message(entry) is True
    assert store.is_seen(entry.id)
    assert store.add_message(entry) is False
    assert store.history() == [entry]


def test_history_by_conversation_oldest_first(store: Store) -> None:
    a = _entry("0a" * 16, ("alice", "bob"), "bob", 300)
    b = _entry("0b" * 16, ("alice", "bob", "carol"), "alice", 100, "out")
    c = _entry("0c" * 16, ("alice", "carol"), "carol", 200)
    for entry in (a, b, c):
        store.add_message(entry)
    assert store.history() == [b, c, a]
    assert store.history("bob") == [b, a]
    assert store.history("carol") == [b, c]
    assert store.history("dave") == []


def test_data_survives_reopen(tmp_path: Path) -> None:
    first = Store.open(tmp_path)
    first.pin("bob", b"k" * 32, now_ms=1)
    first.add_message(_entry("0d" * 16, ("alice", "bob"), "bob", 1))
    first.close()
    again = Store.open(tmp_path)
    try:
        assert again.pinned_key("bob") == b"k" * 32
        assert again.is_seen("0d" * 16)
    finally:
        again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / Store.FILENAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew):
        Store.open(tmp_path)
