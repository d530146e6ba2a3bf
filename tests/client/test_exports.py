"""The public face of ``mailslot.client`` is exactly what ``__all__`` says."""

from __future__ import annotations

import mailslot.client


def test_exported_members() -> None:
    assert sorted(mailslot.client.__all__) == [
        "Attachment",
        "Client",
        "Contact",
        "DeviceAlert",
        "DeviceInfo",
        "HistoryEntry",
        "Identity",
        "KdfParams",
        "PendingLink",
        "ReceivedMessage",
        "SentMessage",
    ]
    for name in mailslot.client.__all__:
        assert getattr(mailslot.client, name).__module__.startswith("mailslot.client.")
