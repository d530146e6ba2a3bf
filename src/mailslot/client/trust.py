"""Trust in contacts: what may be sent to whom, whose mail is shown, and safety codes.

Each contact has one pinned account key and a trust level (``models.TrustLevel``):

* ``untrusted``: pinned under the ``never`` policy, not yet accepted. Nothing is sent; mail
  from it stays queued on the server (held, not acknowledged) until the user decides.
* ``trusted-unverified``: accepted on first use or by ``identity trust``; usable.
* ``trusted-verified``: the user compared the safety code with the contact and it matched;
  received messages are marked verified.
* ``blocked``: nothing is sent; its mail is acknowledged and dropped, with a log line.

A changed key is never used until the user decides (``directory.py`` stops it with
``KeyChanged``), except under the ``always`` policy. Every decision here looks at the key the
server serves NOW, verified under its own signature (``Directory.fetch_served``), so what the
user accepts is exactly what later sends are checked against; a key the server swaps again
afterwards is a new ``KeyChanged``.
"""

from __future__ import annotations

from mailslot.client.models import Contact, Identity, TrustLevel
from mailslot.client.session import Session
from mailslot.client.transport import now_ms
from mailslot.errors import ForbiddenError, InputError, KeyChanged, VerificationError
from mailslot.protocol.device_list import DeviceList, SignedDeviceList
from mailslot.protocol.identity import check_handle
from mailslot.protocol.safety import codes_match, fingerprint, parse_code, safety_code

SENDABLE: frozenset[TrustLevel] = frozenset({"trusted-unverified", "trusted-verified"})


def check_sendable(session: Session, handle: str) -> None:
    """Raise unless ``handle``'s pinned key is trusted (its list was fetched just before)."""
    contact = session.store.contact(handle)
    if contact is None or contact.trust == "untrusted":
        fp = contact.fingerprint if contact is not None else "unknown"
        raise KeyChanged(
            f"the account key of {handle!r} ({fp}) is not trusted yet; compare safety codes "
            f"(mailslot identity show {handle}) and accept it (mailslot identity trust {handle})",
            details={"handle": handle, "served": fp},
        )
    if contact.trust == "blocked":
        raise ForbiddenError(
            f"you blocked {handle!r}; nothing is sent to it (mailslot identity trust {handle} unblocks)"
        )


def is_blocked(session: Session, handle: str) -> bool:
    contact = session.store.contact(handle)
    return contact is not None and contact.trust == "blocked"


def is_verified(session: Session, handle: str) -> bool:
    """Whether messages from ``handle`` count as verified: this account, or a verified key."""
    if handle == session.secrets.handle:
        return True
    contact = session.store.contact(handle)
    return contact is not None and contact.trust == "trusted-verified"


def _other(session: Session, handle: str) -> str:
    check_handle(handle)
    if handle == session.secrets.handle:
        raise InputError("that is your own account; its key is the one this device holds")
    return handle


def _code(session: Session, handle: str, served: DeviceList) -> str:
    own = session.secrets
    return safety_code(own.handle, own.account.public, handle, served.account_key)


async def identity(session: Session, handle: str) -> Identity:
    """The served key of ``handle``, its safety code, and how far it is trusted here.

    A handle seen for the first time is pinned by the trust policy, as a first send would.
    """
    _other(session, handle)
    _, served = await session.directory.fetch_served(handle)
    if session.store.contact(handle) is None:
        await session.directory.get(handle, refresh=True)
    contact = session.store.contact(handle)
    assert contact is not None
    same = contact.account_key == served.account_key.hex()
    return Identity(
        handle=handle,
        account_key=served.account_key.hex(),
        fingerprint=fingerprint(served.account_key),
        trust=contact.trust if same else "untrusted",
        code=_code(session, handle, served),
        pinned_fingerprint=None if same else contact.fingerprint,
    )


def _pin_served(
    session: Session, handle: str, signed: SignedDeviceList, served: DeviceList, trust: TrustLevel
) -> Contact:
    """Pin the served key of ``handle`` at ``trust`` and keep its verified list."""
    session.store.repin(handle, served.account_key, now_ms(), trust)
    session.directory.forget(handle)
    session.directory.remember(signed, served)
    contact = session.store.contact(handle)
    assert contact is not None
    return contact


async def trust(session: Session, handle: str) -> Contact:
    """Accept the key ``handle`` has now: trusted-unverified (a verified one stays verified)."""
    _other(session, handle)
    before = session.store.contact(handle)
    signed, served = await session.directory.fetch_served(handle)
    keep = before is not None and before.trust == "trusted-verified"
    keep = keep and before is not None and before.account_key == served.account_key.hex()
    return _pin_served(session, handle, signed, served, "trusted-verified" if keep else "trusted-unverified")


async def verify(session: Session, handle: str, code: str) -> Contact:
    """Mark ``handle`` trusted-verified if ``code`` is the safety code for its served key.

    A wrong code raises ``VerificationError`` and changes nothing: the contact keeps its key
    and its trust level. A right code for a changed key accepts the new key, verified.
    """
    _other(session, handle)
    given = parse_code(code)
    signed, served = await session.directory.fetch_served(handle)
    if not codes_match(_code(session, handle, served), given):
        raise VerificationError(
            f"the safety code does not match the account key of {handle!r} "
            f"({fingerprint(served.account_key)}); it stays as it was. Check that you both look "
            "at the same pair of accounts; a real mismatch means someone's key is not theirs"
        )
    return _pin_served(session, handle, signed, served, "trusted-verified")


async def block(session: Session, handle: str) -> Contact:
    """Block ``handle``: nothing is sent to it and its mail is dropped (acknowledged)."""
    _other(session, handle)
    contact = session.store.contact(handle)
    if contact is None:
        signed, served = await session.directory.fetch_served(handle)
        return _pin_served(session, handle, signed, served, "blocked")
    session.store.repin(handle, bytes.fromhex(contact.account_key), now_ms(), "blocked")
    blocked = session.store.contact(handle)
    assert blocked is not None
    return blocked


def contacts(session: Session) -> list[Contact]:
    """Every contact but this account, by handle."""
    return [c for c in session.store.contacts() if c.handle != session.secrets.handle]
