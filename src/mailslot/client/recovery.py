"""Recovering an account whose devices are all lost, with the recovery code (``protocol/recovery.py``).

The new device:

1. reads the code (a malformed one fails here, before any request);
2. reads the account's current list from the server's public list history and verifies it
   under the account key it names; the code must derive the recovery key that list commits
   to, else it fails here, before anything is sent (the server checks again);
3. makes new device keys, a new account key and a new recovery secret, and builds the next
   version of the list under them: itself as the only device and approver;
4. signs the recovery claim with the old recovery key and posts it, the request signed by the
   new device (``POST /v1/accounts/{handle}/recover``), as registration is;
5. sets its home up only once the server accepted, as registration does.

The old devices are removed by the server (they learn who removed them and when from the
history: ``alerts.py``); contacts see a new account key, which stops their sending until they
trust or verify it (``trust.py``): a recovery is never a silent key swap.
"""

from __future__ import annotations

from pathlib import Path

from mailslot.client import linking
from mailslot.client.keystore import DeviceSecrets, KdfParams
from mailslot.client.models import TrustPolicy
from mailslot.client.session import Session, create_home, ensure_new_home, read_ca
from mailslot.client.transport import Transport, normalize_server, now_ms
from mailslot.errors import DecodeError, InputError, RecoveryRefused, VerificationError
from mailslot.protocol import wire
from mailslot.protocol.device_list import DeviceList, SignedDeviceList, sign_device_list, verify_device_list
from mailslot.protocol.identity import AccountKey, DeviceKeys, check_handle
from mailslot.protocol.recovery import RecoverySecret, parse_recovery_code, sign_recovery

HISTORY_PAGE = 100


async def current_list(transport: Transport, handle: str) -> DeviceList:
    """The newest list in the account's public history, verified under the key it names.

    The history needs no authentication (this device is not known to the server yet). A server
    that shows an older list only makes the recovery fail: the claim names the version it
    replaces, and the server takes only the next one.
    """
    after, newest = 0, b""
    while True:
        page = await transport.call(
            "GET",
            f"/v1/accounts/{handle}/devices/history",
            wire.DeviceListHistory,
            query={"after": after, "limit": HISTORY_PAGE},
            signed=False,
        )
        if page.lists:
            newest = page.lists[-1]
            after = _parse(handle, newest).version
        if not page.more or not page.lists:
            break
    if not newest:
        raise VerificationError(f"the server has no device list for {handle!r}")
    return _parse(handle, newest)


def _parse(handle: str, raw: bytes) -> DeviceList:
    try:
        signed = SignedDeviceList.from_bytes(raw)
        return verify_device_list(signed, handle=handle, account_key=signed.parse().account_key)
    except (DecodeError, VerificationError) as exc:
        raise VerificationError(f"the server sent a device list of {handle!r} that does not verify") from exc


def _check_code(secret: RecoverySecret, current: DeviceList) -> None:
    if secret.key_for(current.handle).public != current.recovery_key:
        raise RecoveryRefused(
            f"that is not the recovery code of {current.handle!r} (check it letter by letter; "
            "only the code shown when the account was registered, or last recovered, works)"
        )


async def recover(
    home: Path,
    server: str,
    handle: str,
    code: str,
    *,
    passphrase: bytes,
    ca: Path | None = None,
    device_name: str = "primary",
    kdf: KdfParams | None = None,
    policy: TrustPolicy = "on-first-use",
) -> tuple[Session, str]:
    """Recover ``handle`` onto a new device in ``home``; the session and the NEW recovery code."""
    check_handle(handle)
    ensure_new_home(home)
    if not passphrase:
        raise InputError("the passphrase must not be empty")
    secret = parse_recovery_code(code)
    ca_pem = read_ca(ca)
    keys, account, successor_secret = DeviceKeys.generate(), AccountKey.generate(), RecoverySecret.generate()
    record = linking.new_record(keys, device_name)
    transport = Transport(normalize_server(server), keys, ca=ca)
    try:
        current = await current_list(transport, handle)
        _check_code(secret, current)
        new_list = current.successor(
            [record],
            approver=keys.device_id,
            issued_at_ms=now_ms(),
            account_key=account.public,
            recovery_key=successor_secret.key_for(handle).public,
        )
        signed = sign_device_list(new_list, account, keys)
        claim = sign_recovery(secret, current, signed)
        await transport.call(
            "POST",
            f"/v1/accounts/{handle}/recover",
            wire.AccountInfo,
            body=wire.RecoverRequest(device_list=signed.to_bytes(), signature=claim),
        )
        secrets = DeviceSecrets(
            handle, transport.server, device_name, keys, account, kem_created_ms=record.created_at_ms
        )
        session = create_home(
            home, secrets, passphrase, signed, new_list, transport, ca_pem=ca_pem, kdf=kdf, policy=policy
        )
    except BaseException:
        await transport.aclose()
        raise
    return session, successor_secret.code
