"""One device's live state: its secrets, local store, transport and verified directory.

A device home directory holds three files, all private to the user (directory 0700):

* ``device.key`` — the encrypted keystore (``keystore.py``); its presence means "set up";
* ``store.sqlite3`` — the local database (``store.py``);
* ``server-ca.pem`` — a copy of the CA that signs the server's certificate, when one was given,
  so that later commands need not be told again (and a moved file does not break them).

``create_home`` is the single way a home comes into being, after the server accepted the
device (registration or an approved link): keystore first, as the commit point, then the CA and
the store, which ``open_session`` can rebuild from the keystore and the server if they are lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailslot.client import alerts
from mailslot.client.directory import Directory
from mailslot.client.keystore import DeviceSecrets, KdfParams, Keystore, SealingKey, write_private
from mailslot.client.models import TrustPolicy
from mailslot.client.store import Store
from mailslot.client.transport import Transport, now_ms
from mailslot.errors import ConfigError, DeviceRemoved
from mailslot.protocol.device_list import DeviceList, SignedDeviceList

CA_FILENAME = "server-ca.pem"


@dataclass
class Session:
    """Everything a set-up device works with."""

    home: Path
    secrets: DeviceSecrets
    store: Store
    transport: Transport
    directory: Directory
    sealing: SealingKey  # rewrites the keystore (key rotation, rename) without the passphrase

    def __post_init__(self) -> None:
        # The own account's list is the one the alert walk checked (``alerts.own_list``).
        async def own_lists(*, refresh: bool, checked: bool) -> DeviceList:
            return await alerts.own_list(self, refresh=refresh, checked=checked)

        self.directory.own_lists = own_lists

    def save_secrets(self, secrets: DeviceSecrets) -> None:
        """Write ``secrets`` to the keystore (durably), then use them."""
        Keystore(self.home).write(secrets, self.sealing)
        self.secrets = secrets

    async def aclose(self) -> None:
        try:
            await self.transport.aclose()
        finally:
            self.store.close()


def ensure_new_home(home: Path) -> None:
    """Refuse to set a device up twice in the same home (it would lose the first one's keys)."""
    if Keystore(home).exists():
        raise ConfigError(f"a device is already set up in {home}; use another --home")


def read_ca(ca: Path | None) -> bytes | None:
    """The bytes of a CA file named on the command line, read once, before any network use."""
    if ca is None:
        return None
    try:
        return ca.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the CA certificate {ca}: {exc.strerror or exc}") from exc


def create_home(
    home: Path,
    secrets: DeviceSecrets,
    passphrase: bytes,
    signed: SignedDeviceList,
    device_list: DeviceList,
    transport: Transport,
    *,
    ca_pem: bytes | None,
    kdf: KdfParams | None = None,
    policy: TrustPolicy = "on-first-use",
) -> Session:
    """Write keystore, CA copy and store for a device the server has just accepted."""
    ensure_new_home(home)
    sealing = Keystore(home).save(secrets, passphrase, kdf)
    if ca_pem is not None:
        write_private(home / CA_FILENAME, ca_pem)
    store = Store.open(home)
    try:
        store.pin(secrets.handle, secrets.account.public, now_ms(), "trusted-verified")
        directory = Directory(transport, store, policy, own=secrets.handle)
        directory.remember(signed, device_list)
        store.record_step(secrets.handle, device_list.version, signed.to_bytes())  # alerts start here
    except BaseException:
        store.close()
        raise
    return Session(home, secrets, store, transport, directory, sealing)


def open_session(home: Path, passphrase: bytes, policy: TrustPolicy = "on-first-use") -> Session:
    """Unlock the keystore in ``home`` and open the store and a transport for it."""
    secrets, sealing = Keystore(home).unlock(passphrase)
    ca_path = home / CA_FILENAME
    store = Store.open(home)
    try:
        store.pin(secrets.handle, secrets.account.public, now_ms(), "trusted-verified")
        ca = ca_path if ca_path.exists() else None
        transport = Transport(secrets.server, secrets.device, ca=ca)
        removal = store.removal()
        if removal is not None:
            transport.removed = DeviceRemoved(removal[0], details=removal[1])
    except BaseException:
        store.close()
        raise
    directory = Directory(transport, store, policy, own=secrets.handle)
    return Session(home, secrets, store, transport, directory, sealing)
