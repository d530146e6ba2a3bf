"""Account recovery: a code shown once at registration that can replace a lost account key.

When every device of an account is lost, so is the account key, and with it the only key
that can sign the account's device list. The recovery code is the one way back:

* At registration the client draws 20 random bytes, the *recovery secret*, and shows them once
  as a *recovery code*: 32 base32 letters in eight groups of four. From the secret it derives
  an Ed25519 *recovery key* (HKDF-SHA256, salt ``RECOVERY_KEY`` label, info the handle), whose
  public half every device list of the account commits to (``DeviceList.recovery_key``). The
  server never sees the secret.
* To recover, a new device makes a new account key and a new recovery secret, builds the next
  version of the device list under them (itself as the only device and approver), and signs a
  *recovery claim* with the old recovery key: the label, the handle, the old account key, the
  old version and the exact bytes of the new signed list. The server accepts the new list only
  if the claim verifies under the recovery key of the list it holds now
  (``verify_recovery``), so without the code the handle cannot be taken over.
* Contacts see a new account key, which stops sending until they trust or verify it
  (``client/trust.py``): a recovery is never a silent swap.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from mailslot.errors import InputError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.device_list import DeviceList, SignedDeviceList, verify_device_list
from mailslot.protocol.encoding import Writer
from mailslot.protocol.identity import AccountKey, check_handle

SECRET_SIZE = 20
CODE_LETTERS = 32
GROUP = 4
# Letters people confuse with base32 ones; the base32 alphabet has no 0, 1 or 8.
_LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})


@dataclass(frozen=True)
class RecoverySecret:
    """The secret behind a recovery code; ``code`` is how it is shown, ``key_for`` what it signs with."""

    secret: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> RecoverySecret:
        return cls(crypto.random_bytes(SECRET_SIZE))

    @property
    def code(self) -> str:
        """The code to write down: ``ABCD-EFGH-...`` (eight groups of four base32 letters)."""
        letters = base64.b32encode(self.secret).decode()
        return "-".join(letters[i : i + GROUP] for i in range(0, CODE_LETTERS, GROUP))

    def key_for(self, handle: str) -> AccountKey:
        """The Ed25519 recovery key of ``handle`` (the same secret gives each handle its own)."""
        check_handle(handle)
        seed = crypto.derive_key(
            self.secret, salt=labels.RECOVERY_KEY, info=handle.encode(), size=crypto.SIGN_SEED_SIZE
        )
        return AccountKey(seed)


def parse_recovery_code(text: str) -> RecoverySecret:
    """Read a recovery code as a person typed it: case, spaces and dashes do not matter, and
    0, 1 and 8 are read as O, I and B."""
    letters = "".join(text.split()).replace("-", "").upper().translate(_LOOKALIKES)
    if len(letters) != CODE_LETTERS:
        raise InputError(f"a recovery code has {CODE_LETTERS} letters (A-Z, 2-7), in groups of four")
    try:
        secret = base64.b32decode(letters)
    except ValueError as exc:
        raise InputError("a recovery code uses only the letters A-Z and digits 2-7") from exc
    return RecoverySecret(secret)


def claim_bytes(current: DeviceList, new: SignedDeviceList) -> bytes:
    """What the recovery key signs: it names the list it replaces and the list that replaces it."""
    w = Writer().var(labels.RECOVERY_CLAIM).text(current.handle)
    w.fixed(current.account_key, crypto.SIGN_PUBLIC_SIZE).u64(current.version)
    return w.var(new.to_bytes()).to_bytes()


def sign_recovery(secret: RecoverySecret, current: DeviceList, new: SignedDeviceList) -> bytes:
    """The recovery claim's signature, refused locally if this code is not the account's."""
    key = secret.key_for(current.handle)
    if key.public != current.recovery_key:
        raise VerificationError(f"that recovery code is not the one of {current.handle!r}")
    return key.sign(claim_bytes(current, new))


def verify_recovery(current: DeviceList, new: SignedDeviceList, signature: bytes) -> DeviceList:
    """Return the new list if it may replace ``current`` by recovery.

    Checked, in order: the new list verifies under the account key it names and is approved
    by a device it lists (``verify_device_list``); it is for the same handle and exactly the
    next version; and ``signature`` is the recovery claim signed by the recovery key that
    ``current`` commits to. A wrong code fails the last check.
    """
    listed = new.parse()
    new_list = verify_device_list(new, handle=current.handle, account_key=listed.account_key)
    if new_list.version != current.version + 1:
        raise VerificationError(f"a recovered device list must have version {current.version + 1}")
    crypto.verify(current.recovery_key, signature, claim_bytes(current, new))
    return new_list
