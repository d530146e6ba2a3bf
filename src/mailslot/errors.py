"""Every error mailslot raises, in one tree.

Each error carries a stable wire ``code`` (what the server puts in a JSON error body and the
client turns back into the same class), the ``http_status`` the server answers with, and the
``exit_code`` the CLI exits with. Foreign exceptions (sqlite3, httpx, cryptography) are
translated into these only at the I/O edge.

    MailslotError
    ├── InputError                  400  malformed request or argument
    │   └── DecodeError             400  canonical bytes that do not parse
    ├── AuthenticationError         401  request not signed by a known device, stale or replayed
    ├── ForbiddenError              403  authenticated, but not allowed
    │   ├── DeviceRemoved           403  this device was removed from its account
    │   ├── InviteRequired          403  registration needs a valid invite token
    │   └── RecoveryRefused         403  the recovery claim does not verify
    ├── NotFoundError               404
    │   └── UnknownHandle           404
    ├── ConflictError               409
    │   ├── HandleTaken             409
    │   ├── StaleDeviceList         409  device list version not increasing
    │   ├── DeviceMismatch          409  a send's device set differs from the current sets
    │   └── MessageIdConflict       409  message id already used by another sender
    ├── LimitExceeded               429  configured limits
    │   ├── TooLarge                413
    │   ├── QuotaExceeded           413  an account's blobs would pass its storage quota
    │   ├── RateLimited             429
    │   ├── QueueFull               429
    │   └── TooManyDevices          409
    ├── VerificationError                a signature or AEAD check failed (opaque on purpose)
    │   └── MessageRejected              an incoming message failed a check; see ``reason``
    ├── KeyChanged                       a contact's pinned account key changed
    ├── NetworkError                     the server could not be reached
    ├── ServerError                 5xx  the server failed (never for a client's mistake)
    ├── ConfigError                      bad configuration or local state
    │   └── SchemaTooNew                 the database was written by a newer mailslot
    └── LinkTimeout                      nobody approved a device link in time
"""

from __future__ import annotations

from typing import Any, ClassVar


class MailslotError(Exception):
    """Base of every mailslot error."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 400
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details: dict[str, Any] = details or {}

    def to_wire(self) -> dict[str, Any]:
        """The JSON error body the server sends for this error."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InputError(MailslotError):
    """The request or argument is malformed."""

    code = "bad_request"
    exit_code = 2


class DecodeError(InputError):
    """Bytes that do not follow the canonical encoding."""

    code = "malformed"


class AuthenticationError(MailslotError):
    """The request is not signed by a known device, or the signature is stale or replayed."""

    code = "unauthenticated"
    http_status = 401
    exit_code = 4


class ForbiddenError(MailslotError):
    """The device is authenticated but not allowed to do this."""

    code = "forbidden"
    http_status = 403
    exit_code = 4


class DeviceRemoved(ForbiddenError):
    """This device was removed from its account's device list; it receives nothing more."""

    code = "device_removed"


class InviteRequired(ForbiddenError):
    """Registration on this server needs a valid, unused invite token."""

    code = "invite_required"


class RecoveryRefused(ForbiddenError):
    """The recovery claim does not verify under the account's recovery key."""

    code = "recovery_refused"


class NotFoundError(MailslotError):
    """No such thing."""

    code = "not_found"
    http_status = 404
    exit_code = 3


class UnknownHandle(NotFoundError):
    """No account has this handle."""

    code = "unknown_handle"


class ConflictError(MailslotError):
    """The request conflicts with the current state."""

    code = "conflict"
    http_status = 409
    exit_code = 5


class HandleTaken(ConflictError):
    """The handle is already registered."""

    code = "handle_taken"


class StaleDeviceList(ConflictError):
    """The device list version does not increase on the current one."""

    code = "stale_device_list"


class DeviceMismatch(ConflictError):
    """The message is not addressed to exactly the current devices of its recipients."""

    code = "device_mismatch"


class MessageIdConflict(ConflictError):
    """The message id is already used by another sender."""

    code = "message_id_conflict"


class LimitExceeded(MailslotError):
    """A configured limit was reached."""

    code = "limit_exceeded"
    http_status = 429
    exit_code = 6


class TooLarge(LimitExceeded):
    """The request is larger than the server accepts."""

    code = "too_large"
    http_status = 413


class QuotaExceeded(LimitExceeded):
    """The account's stored blobs would pass its storage quota."""

    code = "quota_exceeded"
    http_status = 413


class RateLimited(LimitExceeded):
    """Too many requests from this device; slow down."""

    code = "rate_limited"


class QueueFull(LimitExceeded):
    """A recipient device's queue is full."""

    code = "queue_full"


class TooManyDevices(LimitExceeded):
    """The account has as many devices as the server allows."""

    code = "too_many_devices"
    http_status = 409


class VerificationError(MailslotError):
    """A signature or authenticated-encryption check failed."""

    code = "verification_failed"
    exit_code = 7


class MessageRejected(VerificationError):
    """A message failed verification and was discarded.

    ``str()`` is deliberately the same for every cause, so that nothing about why leaks to
    whoever sent it; ``reason`` says why, for the local log only.
    """

    code = "message_rejected"

    def __init__(self, reason: str) -> None:
        super().__init__("message rejected")
        self.reason = reason


class KeyChanged(MailslotError):
    """A contact's account key differs from the one pinned on first contact."""

    code = "key_changed"
    exit_code = 8


class NetworkError(MailslotError):
    """The server could not be reached."""

    code = "network"
    exit_code = 9


class ServerError(MailslotError):
    """The server failed to handle a valid request."""

    code = "server_error"
    http_status = 500
    exit_code = 10


class ConfigError(MailslotError):
    """The configuration or the local state is missing or invalid."""

    code = "config"
    exit_code = 3


class SchemaTooNew(ConfigError):
    """The database schema is newer than this version of mailslot understands."""

    code = "schema_too_new"


class LinkTimeout(MailslotError):
    """No existing device approved the link in time."""

    code = "link_timeout"
    exit_code = 11


def _all_subclasses(cls: type[MailslotError]) -> list[type[MailslotError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


WIRE_CODES: dict[str, type[MailslotError]] = {c.code: c for c in _all_subclasses(MailslotError)}


def from_wire(status: int, body: Any) -> MailslotError:
    """Rebuild the error a server answered with, falling back on the HTTP status."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        cls = WIRE_CODES.get(body["error"], MailslotError)
        message = str(body.get("message", ""))
        details = body.get("details") if isinstance(body.get("details"), dict) else None
        if cls is MessageRejected:
            return VerificationError(message)
        return cls(message, details=details)
    by_status: dict[int, type[MailslotError]] = {
        401: AuthenticationError,
        403: ForbiddenError,
        404: NotFoundError,
        409: ConflictError,
        413: TooLarge,
        429: LimitExceeded,
    }
    if status >= 500:
        return ServerError(f"server answered HTTP {status}")
    return by_status.get(status, InputError)(f"server answered HTTP {status}")
