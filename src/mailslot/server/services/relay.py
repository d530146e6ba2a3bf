"""The relay: accepts one encrypted body plus one wrapped key per device, queues, delivers.

Rules held here (docs/protocol.md, "Delivery semantics"):

* a send must cover exactly the current devices of every recipient account plus the sender's
  own other devices, otherwise ``DeviceMismatch`` names what is missing and what is stale;
* a send is idempotent on its message id; accepted means committed (the store writes the body
  and every queue entry in one transaction before this returns);
* a device reads and acknowledges only its own queue; an acknowledged entry is deleted at once.
"""

from __future__ import annotations

from mailslot.errors import DeviceMismatch, InputError, TooLarge, UnknownHandle
from mailslot.protocol.identity import check_handle, parse_device_id, parse_message_id
from mailslot.protocol.wire import AckRequest, Delivery, QueueResponse, SendRequest, SendResponse
from mailslot.server.bus import WakeupBus
from mailslot.server.config import ServerConfig
from mailslot.server.metrics import Metrics
from mailslot.server.storage.base import DeviceRow, NewMessage, QueueEntry, Storage

MAX_WRAPPED_KEY = 2048
MAX_FETCH = 500
MAX_ACK = 1000


def delivery_of(entry: QueueEntry) -> Delivery:
    return Delivery(
        seq=entry.seq,
        message_id=entry.message_id.hex(),
        sender=entry.sender,
        sender_device=entry.sender_device.hex(),
        accepted_at=entry.accepted_at_ms,
        body=entry.body,
        key=entry.wrapped_key,
    )


class Relay:
    def __init__(
        self, store: Storage, config: ServerConfig, bus: WakeupBus, metrics: Metrics | None = None
    ) -> None:
        self._store = store
        self._config = config
        self._bus = bus
        self._metrics = metrics or Metrics()

    def _recipients(self, sender: DeviceRow, recipients: list[str]) -> list[str]:
        handles = sorted({check_handle(h) for h in recipients} - {sender.handle})
        if not handles:
            raise InputError("name at least one recipient other than the sender")
        if len(handles) > self._config.max_recipients:
            raise InputError(f"at most {self._config.max_recipients} recipients per message")
        return handles

    def _keys(self, request: SendRequest) -> dict[bytes, bytes]:
        keys = {parse_device_id(dev): key for dev, key in request.keys.items()}
        if any(len(key) > MAX_WRAPPED_KEY for key in keys.values()):
            raise InputError("a wrapped key is too large")
        return keys

    async def _check_devices(
        self, sender: DeviceRow, handles: list[str], request: SendRequest, given: set[bytes],
        message_id: bytes,
    ) -> None:
        """Refuse a send that does not cover exactly the current device set, or that was sealed
        under an older list version than the current one (a device may have rotated its
        encryption key since), unless it is the retry of a send already accepted (the lists may
        have changed since, and the retry must still get the first answer)."""
        current = await self._store.devices_of([*handles, sender.handle])
        unknown = [h for h in handles if h not in current]
        if unknown:
            raise UnknownHandle(f"no account {', '.join(unknown)}", details={"handles": unknown})
        expected = set().union(*(current[h].device_ids for h in handles))
        expected |= current[sender.handle].device_ids - {sender.device_id}
        outdated = sorted(h for h, now in current.items() if request.versions.get(h, 0) < now.version)
        if (expected != given or outdated) and not await self._store.message_exists(message_id):
            versions = {h: now.version for h, now in current.items()}
            raise DeviceMismatch(
                "the message does not cover exactly the current devices under their current "
                "device lists; re-fetch the device lists",
                details={
                    "missing": sorted(d.hex() for d in expected - given),
                    "stale": sorted(d.hex() for d in given - expected),
                    "outdated": outdated,
                    "versions": versions,
                },
            )

    async def send(self, sender: DeviceRow, request: SendRequest, now_ms: int) -> tuple[SendResponse, bool]:
        """Accept a send; returns the answer and whether it was new (False: a retry)."""
        message_id = parse_message_id(request.message_id)
        if len(request.body) > self._config.max_body_bytes:
            raise TooLarge(f"message body exceeds {self._config.max_body_bytes} bytes")
        handles = self._recipients(sender, request.recipients)
        keys = self._keys(request)
        await self._check_devices(sender, handles, request, set(keys), message_id)
        message = NewMessage(
            message_id=message_id,
            sender=sender.handle,
            sender_device=sender.device_id,
            accepted_at_ms=now_ms,
            expires_at_ms=now_ms + self._config.message_ttl_s * 1000,
            body=request.body,
            keys=keys,
        )
        stored = await self._store.store_message(message, self._config.max_queue_per_device)
        self._metrics.sent(stored.created, len(keys))
        if stored.created:
            await self._bus.notify(list(keys))
        answer = SendResponse(request.message_id, stored.accepted_at_ms, stored.devices)
        return answer, stored.created

    async def fetch(self, device: DeviceRow, after: int, limit: int) -> QueueResponse:
        limit = max(1, min(limit, MAX_FETCH))
        entries = await self._store.fetch_queue(device.device_id, after, limit)
        return QueueResponse([delivery_of(e) for e in entries], more=len(entries) == limit)

    async def ack(self, device: DeviceRow, request: AckRequest) -> int:
        if len(request.message_ids) > MAX_ACK:
            raise InputError(f"at most {MAX_ACK} ids per acknowledgement")
        ids = [parse_message_id(m) for m in request.message_ids]
        deleted = await self._store.ack(device.device_id, ids)
        self._metrics.delivered(deleted)
        return deleted
