"""Rendering: times in ISO 8601 UTC, untrusted text made harmless for a terminal."""

from __future__ import annotations

from pathlib import Path

from mailslot.cli.output import human_size, iso_time, message_json, message_text, safe
from mailslot.client import Attachment, ReceivedMessage


def test_iso_time_is_utc_with_milliseconds() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def test_control_characters_are_neutralised() -> None:
    assert safe("a\x1b[31mb\x07c\u202ed") == "a\ufffd[31mb\ufffdc\ufffdd"
    assert safe("line one\nline\ttwo ✉") == "line one\nline\ttwo ✉"


def test_message_json_fields() -> None:
    message = ReceivedMessage("ab" * 16, "alice", "cd" * 16, ("alice", "bob"), 0, 5, "hi")
    assert message_json(message) == {
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
