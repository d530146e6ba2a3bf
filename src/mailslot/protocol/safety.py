"""Safety codes and key fingerprints: what two people compare to know they see the same keys.

The server runs the key directory, so it could show Alice a key for Bob that Bob never made.
A signed device list cannot catch that (the server's key would sign its own list); comparing a
code derived from both account keys can. The code is 60 decimal digits, identical on both
sides whatever the order of the parties:

* each party's half is 30 digits of ``PBKDF2-HMAC-SHA512(password = encode(HALF_LABEL, handle,
  account_key), salt = SALT, iterations = ITERATIONS, 64 bytes)``, where ``encode`` is the
  canonical encoding of ``protocol/encoding.py`` (label and handle length-prefixed, then the
  32-byte key), so no two (handle, key) pairs share an input;
* the digits: the first 30 bytes of the hash as six 5-byte big-endian integers, each taken
  modulo 100000 and written as 5 digits (the bias of 2**40 mod 10**5 is below 2**-23);
* the code is the two halves in ascending order (as digit strings), so it does not depend on
  who computes it. It is shown as 12 groups of 5 digits.

The slow hash makes each attempt at a key whose half collides with the victim's cost
``ITERATIONS`` HMAC-SHA512 calls on top of the ~2**100 attempts a 30-digit half needs.
``ITERATIONS`` and the labels are part of the format: changing them changes every code.

A fingerprint is a short, non-slow name for one account key (16 hex digits in groups of
four), for messages such as a key-change warning; it is for recognising a key, not for
verifying one. Only the safety code is meant to be compared.
"""

from __future__ import annotations

import hmac
from functools import lru_cache

from mailslot.errors import InputError
from mailslot.protocol import crypto
from mailslot.protocol.encoding import Writer
from mailslot.protocol.identity import check_handle

HALF_LABEL = b"mailslot/v1/safety-code-half"
SALT = b"mailslot/v1/safety-code"
FINGERPRINT_LABEL = b"mailslot/v1/fingerprint"
ITERATIONS = 50_000
HALF_DIGITS = 30
CODE_DIGITS = 2 * HALF_DIGITS
GROUP = 5
_CHUNK_BYTES = 5


def fingerprint(account_key: bytes) -> str:
    """A short name for an account key, e.g. ``3fa2 91c0 7d1e 55b8`` (a labelled SHA-256)."""
    digest = crypto.sha256(FINGERPRINT_LABEL + account_key)[:8].hex()
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


@lru_cache(maxsize=256)
def code_half(handle: str, account_key: bytes) -> str:
    """The 30-digit half of a safety code that stands for one party (see the module doc)."""
    check_handle(handle)
    if len(account_key) != crypto.SIGN_PUBLIC_SIZE:
        raise InputError("an account key is 32 bytes")
    data = Writer().var(HALF_LABEL).text(handle).fixed(account_key, crypto.SIGN_PUBLIC_SIZE).to_bytes()
    digest = crypto.slow_hash(data, salt=SALT, iterations=ITERATIONS)
    chunks = (digest[i : i + _CHUNK_BYTES] for i in range(0, HALF_DIGITS, GROUP))
    return "".join(f"{int.from_bytes(chunk, 'big') % 10**GROUP:0{GROUP}d}" for chunk in chunks)


def safety_code(handle_a: str, key_a: bytes, handle_b: str, key_b: bytes) -> str:
    """The 60-digit code for the pair; the same whichever party is ``a``."""
    halves = sorted((code_half(handle_a, key_a), code_half(handle_b, key_b)))
    return "".join(halves)


def format_code(code: str) -> str:
    """``code`` as 12 groups of 5 digits separated by spaces."""
    return " ".join(code[i : i + GROUP] for i in range(0, len(code), GROUP))


def parse_code(text: str) -> str:
    """The 60 digits a person typed, with any whitespace removed; ``InputError`` otherwise."""
    digits = "".join(text.split())
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        raise InputError(f"a safety code is {CODE_DIGITS} digits (spaces are ignored)")
    return digits


def codes_match(expected: str, given: str) -> bool:
    """Whether the typed code ``given`` equals ``expected`` (compared in constant time)."""
    return hmac.compare_digest(parse_code(expected), parse_code(given))
