"""Rendering: times in ISO 8601 UTC, untrusted text made harmless for a terminal."""

from __future__ import annotations

from mailslot.cli.output import iso_time, message_json, safe
from mailslot.client import ReceivedMessage


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
    }
