"""The async client library: one device of one account, talking to one mailslot server.

``Client`` is the entry point; the value types it returns are re-exported here. Everything
else in this package is an implementation detail.
"""

from mailslot.client.client import Client
from mailslot.client.keystore import KdfParams
from mailslot.client.linking import PendingLink
from mailslot.client.models import (
    Attachment,
    Contact,
    DeviceAlert,
    DeviceInfo,
    HistoryEntry,
    Identity,
    ReceivedMessage,
    SentMessage,
)

__all__ = [
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
