"""Rendering: times in ISO 8601 UTC, untrusted text made harmless for a terminal."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from mailslot.cli.output import (
    Output,
    alert_json,
    alert_text,
    human_size,
    iso_time,
    message_json,
    message_text,
    own_devices_json,
    relative_time,
    safe,
)
from mailslot.client import Attachment, ReceivedMessage
from mailslot.client.linking import new_record
from mailslot.client.models import DeviceAlert, DeviceInfo
from mailslot.protocol.device_list import DeviceList
from mailslot.protocol.identity import DeviceKeys


def test_iso_time_is_utc_with_milliseconds() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def test_control_characters_are_neutralised() -> None:
    assert safe("a\x1b[31mb\x07c\u202ed") == "a\ufffd[31mb\ufffdc\ufffdd"
    assert safe("line one\nline\ttwo ✉") == "line one\nline\ttwo ✉"


def test_message_json_fields() -> None:
    message = ReceivedMessage("ab" * 16, "alice", "cd" * 16, ("alice", "bob"), 0, 5, "hi")
    assert message_json(message) == {
        "type": "message",
        "id": "ab" * 16,
        "from": "alice",
        "from_device": "cd" * 16,
        "to": ["alice", "bob"],
        "sent_at": "1970-01-01T00:00:00.000Z",
        "accepted_at": "1970-01-01T00:00:00.005Z",
        "text": "hi",
        "verified": False,
        "attachments": [],
    }


def test_verified_sender_is_marked() -> None:
    plain = ReceivedMessage("ab" * 16, "alice", "cd" * 16, ("alice", "bob"), 0, 5, "hi")
    verified = ReceivedMessage("ab" * 16, "alice", "cd" * 16, ("alice", "bob"), 0, 5, "hi", verified=True)
    assert "✓" not in message_text(plain).plain
    assert "alice ✓ → bob" in message_text(verified).plain
    assert message_json(verified)["verified"] is True


def test_attachments_in_json_and_text() -> None:
    saved = Attachment(
        "ab" * 16 + "-0", "evil\x1b[2J.jpg", 1536, "image/jpeg", "ef" * 32, True, Path("/d/evil.jpg")
    )
    failed = Attachment("ab" * 16 + "-1", "x.bin", 3 * 1024**3, "a/b", "ef" * 32, False, None, "gone")
    message = ReceivedMessage("ab" * 16, "alice", "cd" * 16, ("alice", "bob"), 0, 5, "", (saved, failed))
    assert message_json(message)["attachments"] == [
        {
            "id": "ab" * 16 + "-0",
            "name": "evil\x1b[2J.jpg",
            "size": 1536,
            "media_type": "image/jpeg",
            "path": "/d/evil.jpg",
        },
        {
            "id": "ab" * 16 + "-1",
            "name": "x.bin",
            "size": 3 * 1024**3,
            "media_type": "a/b",
            "path": None,
            "error": "gone",
        },
    ]
    shown = message_text(message).plain
    assert "\x1b" not in shown
    assert "attachment evil\ufffd[2J.jpg  image/jpeg, 1.5 KiB  saved to /d/evil.jpg" in shown
    assert "attachment x.bin  a/b, 3.0 GiB  not saved: gone" in shown
    assert [human_size(n) for n in (0, 1023, 1024, 5 * 1024**2)] == ["0 B", "1023 B", "1.0 KiB", "5.0 MiB"]


def test_relative_time() -> None:
    now = 10 * 86_400_000
    assert relative_time(None, now) == "never"
    assert relative_time(now - 59_000, now) == "just now"
    assert relative_time(now + 5_000, now) == "just now"  # a clock a little ahead
    assert relative_time(now - 5 * 60_000, now) == "5 min ago"
    assert relative_time(now - 3 * 3_600_000, now) == "3 h ago"
    assert relative_time(now - 47 * 3_600_000, now) == "47 h ago"
    assert relative_time(now - 9 * 86_400_000, now) == "9 days ago"


def alert(**changes: object) -> DeviceAlert:
    fields: dict[str, object] = {
        "id": 7,
        "handle": "alice",
        "version": 4,
        "at": 1_700_000_000_123,
        "kind": "added",
        "device_id": "ab" * 16,
        "device_name": "phone",
        "approver_id": "cd" * 16,
        "approver_name": "laptop",
        "attack": False,
        "own": True,
        "seen": False,
    }
    return DeviceAlert(**{**fields, **changes})  # type: ignore[arg-type]


def test_alert_lines() -> None:
    added = alert_text(alert())
    assert added.plain == (
        f"ALERT: device 'phone' ({'ab' * 16}) was added to your account by 'laptop' "
        "at 2023-11-14T22:13:20.123Z (device list version 4)"
    )
    assert "yellow" in str(added.style)
    attack = alert_text(alert(attack=True, approver_name="evil"))
    assert attack.plain.startswith(f"ATTACK: device 'phone' ({'ab' * 16}) was added to your account")
    assert "approved by no device of your account" in attack.plain and "evil" not in attack.plain
    assert "red" in str(attack.style)
    removed = alert_text(alert(kind="removed")).plain
    assert "was removed from your account by 'laptop'" in removed
    assert "renamed to 'tablet'" in alert_text(alert(kind="renamed", device_name="tablet")).plain
    assert "recovered with its recovery code" in alert_text(alert(kind="recovered")).plain
    notice = alert_text(alert(own=False, handle="bob"))
    assert notice.plain == "NOTICE: bob's devices changed: added 'phone'"
    assert "dim" in str(notice.style)


def test_alert_names_are_neutralised() -> None:
    shown = alert_text(alert(device_name="x\x1b[2Jy", approver_name="\u202eevil")).plain
    assert "\x1b" not in shown and "\u202e" not in shown and "x\ufffd[2Jy" in shown


def test_alert_json_has_every_field_and_a_type() -> None:
    value = alert_json(alert(attack=True))
    assert value == {
        "type": "alert",
        "id": 7,
        "handle": "alice",
        "version": 4,
        "at": 1_700_000_000_123,
        "kind": "added",
        "device_id": "ab" * 16,
        "device_name": "phone",
        "approver_id": "cd" * 16,
        "approver_name": "laptop",
        "attack": True,
        "own": True,
        "seen": False,
    }


def test_own_devices_json_keeps_raw_times() -> None:
    keys = DeviceKeys.generate()
    record = new_record(keys, "phone")
    listed = DeviceList.build(
        "alice", bytes(32), 3, 0, [record], approver=keys.device_id, recovery_key=bytes(32)
    )
    info = DeviceInfo("ab" * 16, "phone", 5, None, "fp", True)
    (device,) = own_devices_json(listed, [info])["devices"]
    assert device == {
        "id": "ab" * 16,
        "name": "phone",
        "created_at": "1970-01-01T00:00:00.005Z",
        "created_at_ms": 5,
        "last_seen_ms": None,
        "enc_key_fingerprint": "fp",
        "this_device": True,
    }


def test_recovery_code_is_boxed_with_a_warning() -> None:
    out = Output("text")
    out.console = Console(width=60, soft_wrap=True, record=True)  # as the real one, but narrow
    out.recovery_code("ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567")
    shown = out.console.export_text()
    assert "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567" in shown and "╭" in shown
    flat = " ".join(shown.replace("│", " ").split())
    assert "shown only once" in flat and "takes the account back." in flat  # wrapped, not cut
    assert all(len(line) <= 60 for line in shown.splitlines())
    quiet = Output("json")
    quiet.console = Console(record=True)
    quiet.recovery_code("ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567")  # JSON: a field of the result
    assert quiet.console.export_text() == ""
