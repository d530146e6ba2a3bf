"""Adding a device to an account through a one-time link code.

The new device makes its keys, a 16-byte link id and a 16-byte secret, and shows the code
``mailslot://link?v=1&server=<url>&id=<hex>&key=<hex>``. Everything that crosses the server is
encrypted under keys derived from that secret, which the server never sees:

1. The new device posts ``LinkRequest`` = its ``DeviceRecord`` plus its own signature over the
   record and link id, sealed with AES-256-GCM under HKDF(secret, link id, "link-request").
2. An existing device with the code opens it, checks the self-signature (proof that the new
   device holds the signing key it claims), publishes a new device list signed by the account
   key, and posts ``LinkResponse`` sealed under HKDF(secret, link id, "link-response"): the
   handle, the new signed list, and the account key sealed with HPKE to the new device's key.
3. The new device opens the response, recovers the account key, and checks that the list
   verifies under it and contains the new device.

Without the code nobody can read or forge either half; without an existing device's approval
there is no account-key signature, so the server alone cannot add a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from mailslot.errors import DecodeError, InputError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.device_list import DeviceRecord, SignedDeviceList
from mailslot.protocol.encoding import Reader, Writer, decode
from mailslot.protocol.identity import AccountKey, DeviceKeys

LINK_ID_SIZE = 16
LINK_SECRET_SIZE = 16
SCHEME_PREFIX = "mailslot://link?"


@dataclass(frozen=True)
class LinkCode:
    """What the new device shows and the approving device types or scans."""

    server: str
    link_id: bytes
    secret: bytes

    @classmethod
    def generate(cls, server: str) -> LinkCode:
        return cls(server, crypto.random_bytes(LINK_ID_SIZE), crypto.random_bytes(LINK_SECRET_SIZE))

    def to_uri(self) -> str:
        return (
            f"{SCHEME_PREFIX}v=1&server={quote(self.server, safe='')}"
            f"&id={self.link_id.hex()}&key={self.secret.hex()}"
        )

    @classmethod
    def parse(cls, uri: str) -> LinkCode:
        uri = uri.strip()
        if not uri.startswith(SCHEME_PREFIX):
            raise InputError("a link code starts with mailslot://link?")
        query = parse_qs(urlsplit(uri).query, strict_parsing=False)
        try:
            if query["v"] != ["1"]:
                raise InputError("unsupported link code version")
            (server,) = query["server"]
            link_id = bytes.fromhex(query["id"][0])
            secret = bytes.fromhex(query["key"][0])
        except (KeyError, ValueError) as exc:
            raise InputError("malformed link code") from exc
        if len(link_id) != LINK_ID_SIZE or len(secret) != LINK_SECRET_SIZE:
            raise InputError("malformed link code")
        if not server.startswith(("https://", "http://")) or not server.isprintable():
            raise InputError("link code names no server URL")
        return cls(server, link_id, secret)

    def _key(self, label: bytes) -> bytes:
        return crypto.derive_key(self.secret, salt=self.link_id, info=label)

    def seal(self, label: bytes, plaintext: bytes) -> bytes:
        nonce = crypto.random_bytes(crypto.AEAD_NONCE_SIZE)
        return nonce + crypto.aead_seal(self._key(label), nonce, plaintext, self.link_id)

    def open(self, label: bytes, sealed: bytes) -> bytes:
        if len(sealed) < crypto.AEAD_NONCE_SIZE:
            raise VerificationError("malformed link message")
        nonce, body = sealed[: crypto.AEAD_NONCE_SIZE], sealed[crypto.AEAD_NONCE_SIZE :]
        return crypto.aead_open(self._key(label), nonce, body, self.link_id)


def _request_signed_bytes(link_id: bytes, record: DeviceRecord) -> bytes:
    return Writer().var(labels.LINK_REQUEST).fixed(link_id, LINK_ID_SIZE).var(record.to_bytes()).to_bytes()


def seal_link_request(code: LinkCode, keys: DeviceKeys, record: DeviceRecord) -> bytes:
    """The new device's half: its record and proof that it holds the record's signing key."""
    signature = keys.sign(_request_signed_bytes(code.link_id, record))
    plain = Writer().var(record.to_bytes()).fixed(signature, crypto.SIGNATURE_SIZE).to_bytes()
    return code.seal(labels.LINK_REQUEST, plain)


def open_link_request(code: LinkCode, sealed: bytes) -> DeviceRecord:
    """Open the new device's request and check its self-signature."""
    try:
        record_bytes, signature = decode(
            code.open(labels.LINK_REQUEST, sealed),
            lambda r: (r.var(8192), r.fixed(crypto.SIGNATURE_SIZE)),
        )
        record = DeviceRecord.from_bytes(record_bytes)
    except DecodeError as exc:
        raise VerificationError("malformed link request") from exc
    crypto.verify(record.sign_key, signature, _request_signed_bytes(code.link_id, record))
    return record


@dataclass(frozen=True)
class LinkResponse:
    """The approving device's half, as the new device sees it once opened."""

    handle: str
    signed_list: SignedDeviceList
    account_key: AccountKey


def _account_key_info(link_id: bytes, device_id: bytes) -> bytes:
    return Writer().var(labels.LINK_ACCOUNT_KEY).fixed(link_id, LINK_ID_SIZE).fixed(device_id, 16).to_bytes()


def seal_link_response(
    code: LinkCode, record: DeviceRecord, handle: str, signed: SignedDeviceList, account: AccountKey
) -> bytes:
    """Hand the new device the account key (HPKE-sealed to it) and the list that adds it."""
    info = _account_key_info(code.link_id, record.device_id)
    wrapped = crypto.hpke_seal(record.enc_key, account.seed, info)
    plain = Writer().text(handle).var(signed.to_bytes()).var(wrapped).to_bytes()
    return code.seal(labels.LINK_RESPONSE, plain)


def open_link_response(code: LinkCode, keys: DeviceKeys, sealed: bytes) -> LinkResponse:
    """Open the response and recover the account key; the caller verifies the list with it."""

    def read(r: Reader) -> tuple[str, bytes, bytes]:
        return r.text(64), r.var(), r.var(4096)

    try:
        handle, list_bytes, wrapped = decode(code.open(labels.LINK_RESPONSE, sealed), read)
        signed = SignedDeviceList.from_bytes(list_bytes)
    except DecodeError as exc:
        raise VerificationError("malformed link response") from exc
    seed = crypto.hpke_open(keys.kem_seed, wrapped, _account_key_info(code.link_id, keys.device_id))
    if len(seed) != crypto.SIGN_SEED_SIZE:
        raise VerificationError("malformed account key")
    return LinkResponse(handle, signed, AccountKey(seed))
