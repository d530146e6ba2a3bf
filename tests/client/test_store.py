"""The device's local store: pinning, rollback refusal, de-duplication, history, schema."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailslot.client.models import AlertKind, DeviceAlert, Direction, HistoryEntry
from mailslot.client.store import _SCHEMA_1, _SCHEMA_2, _SCHEMA_3, SCHEMA_VERSION, Store, StoredAttachment
from mailslot.errors import InputError, KeyChanged, SchemaTooNew, VerificationError
from mailslot.protocol import chunked
from mailslot.protocol.attachment import AttachmentRef
from mailslot.protocol.safety import fingerprint


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
    assert info.value.details == {
        "handle": "bob",
        "pinned": fingerprint(b"k" * 32),
        "served": fingerprint(b"x" * 32),
    }
    assert fingerprint(b"k" * 32) in info.value.message and fingerprint(b"x" * 32) in info.value.message
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


def _ref(name: str = "a.bin", size: int = 3) -> AttachmentRef:
    return AttachmentRef(
        b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, chunked.ciphertext_size(size), size, name, "x/y", b"jpg"
    )


def test_attachments_are_stored_with_their_message(store: Store) -> None:
    entry = _entry("0e" * 16, ("alice", "bob"), "bob", 1)
    stored = [StoredAttachment(entry.id, 0, _ref()), StoredAttachment(entry.id, 2, _ref("b.bin", 0))]
    store.add_message(entry, stored)
    assert store.attachment(f"{entry.id}-2") == stored[1]
    assert store.attachment(f"{entry.id}-1") is None
    (history,) = store.history()
    assert [a.id for a in history.attachments] == [f"{entry.id}-0", f"{entry.id}-2"]
    assert history.attachments[0].has_thumbnail and history.attachments[0].path is None

    store.set_attachment_result(f"{entry.id}-0", Path("/tmp/a.bin"), None)
    store.set_attachment_result(f"{entry.id}-2", None, "gone")
    first, second = store.history()[0].attachments
    assert (first.path, first.error) == (Path("/tmp/a.bin"), None)
    assert (second.path, second.error) == (None, "gone")
    assert store.attachment(f"{entry.id}-0").ref.key == b"\x02" * 32  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", "0e" * 16, "0e" * 16 + "-", "0e" * 16 + "-x", "zz" * 16 + "-0", "0e-0"])
def test_malformed_attachment_ids_are_input_errors(store: Store, bad: str) -> None:
    with pytest.raises(InputError, match="invalid attachment id"):
        store.attachment(bad)


def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    """A database written before attachments existed gains the table and keeps its data."""
    conn = sqlite3.connect(tmp_path / Store.FILENAME)
    for statement in _SCHEMA_1.split(";"):
        conn.execute(statement)
    conn.execute("INSERT INTO seen_ids VALUES ('0f0f', 1)")
    conn.execute("INSERT INTO contacts VALUES ('bob', ?, 1)", (b"k" * 32,))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = Store.open(tmp_path)
    try:
        assert store.is_seen("0f0f")
        entry = _entry("0f" * 16, ("alice", "bob"), "bob", 1)
        assert store.add_message(entry, [StoredAttachment(entry.id, 0, _ref())])
        assert store.history()[0].attachments[0].name == "a.bin"
        # Contacts pinned before trust levels were pinned on first use.
        bob = store.contact("bob")
        assert bob is not None and bob.trust == "trusted-unverified" and bob.account_key == "6b" * 32
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / Store.FILENAME)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (4,)
    conn.close()


def test_a_version_3_store_gains_alerts_checkpoints_and_removal(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / Store.FILENAME)
    for script in (_SCHEMA_1, _SCHEMA_2, _SCHEMA_3):
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("INSERT INTO contacts (handle, account_key, first_seen_ms) VALUES ('bob', ?, 1)", (b"k" * 32,))
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    store = Store.open(tmp_path)
    try:
        assert store.alerts(unseen_only=False) == [] and store.checkpoint("alice") is None
        alert = _alert_of("alice", 2, "added")
        (recorded,) = store.record_step("alice", 2, b"v2", [alert])
        assert recorded.id > 0 and store.checkpoint("alice") == (2, b"v2")
        assert store.record_step("alice", 2, b"other", [alert]) == []  # never moves back or repeats
        assert store.record_step("alice", 1, b"v1", [_alert_of("alice", 1, "removed")]) == []
        assert store.checkpoint("alice") == (2, b"v2")
        notice = _alert_of("bob", 5, "added", own=False)
        assert len(store.add_alerts([notice])) == 1 and store.add_alerts([notice]) == []
        assert [a.handle for a in store.alerts()] == ["alice", "bob"]
        assert store.mark_alerts_seen() == 2
        assert store.alerts() == [] and len(store.alerts(unseen_only=False)) == 2
        assert store.removal() is None
        store.set_removal("removed by x", {"version": 3})
        assert store.removal() == ("removed by x", {"version": 3})
        assert store.contact("bob") is not None
    finally:
        store.close()


def _alert_of(handle: str, version: int, kind: AlertKind, *, own: bool = True) -> DeviceAlert:
    return DeviceAlert(0, handle, version, 10, kind, "0a" * 16, "phone", "0b" * 16, "laptop", False, own, False)


def test_trust_levels_and_repin(store: Store) -> None:
    store.pin("bob", b"k" * 32, now_ms=1, trust="untrusted")
    store.save_device_list("bob", 7, b"signed by k")
    assert store.contact("bob").trust == "untrusted"  # type: ignore[union-attr]
    store.repin("bob", b"k" * 32, now_ms=2, trust="blocked")  # same key: only the level changes
    assert store.contact("bob").trust == "blocked"  # type: ignore[union-attr]
    assert store.device_list("bob") == (7, b"signed by k")
    store.repin("bob", b"n" * 32, now_ms=3, trust="trusted-unverified")  # a new key drops the old list
    bob = store.contact("bob")
    assert bob is not None and (bob.account_key, bob.trust, bob.first_seen_ms) == (
        "6e" * 32,
        "trusted-unverified",
        3,
    )
    assert store.device_list("bob") is None
    assert [c.handle for c in store.contacts()] == ["bob"]
    with pytest.raises(InputError, match="trust level"):
        store.repin("bob", b"n" * 32, now_ms=4, trust="friendly")  # type: ignore[arg-type]
