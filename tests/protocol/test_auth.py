"""Property tests of per-request device authentication."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import AuthenticationError
from mailslot.protocol.auth import FRESHNESS_MS, RequestSignature, sign_request, verify_request

NOW = 1_700_000_000_000
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])
TARGETS = st.text(max_size=60).map(lambda t: "/" + t)
BODIES = st.binary(max_size=200)
NONCES = st.binary(min_size=16, max_size=16)
SIGNATURES = st.builds(
    RequestSignature,
    st.binary(min_size=16, max_size=16),
    st.integers(0, 10**15 - 1),
    NONCES,
    st.binary(min_size=64, max_size=64),
)
CRYPTO = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def device(make_device):
    return make_device("auth/device")


@settings(max_examples=200)
@given(SIGNATURES)
def test_header_round_trip(sig: RequestSignature) -> None:
    header = sig.to_header()
    assert header.startswith("Mailslot device=")
    assert RequestSignature.from_header(header) == sig


@settings(max_examples=300)
@given(st.one_of(st.text(), st.text().map(lambda t: "Mailslot device=" + t)))
def test_from_header_arbitrary_text_raises_only_authentication_error(text: str) -> None:
    with contextlib.suppress(AuthenticationError):
        sig = RequestSignature.from_header(text)
        assert RequestSignature.from_header(sig.to_header()) == sig


@settings(max_examples=300)
@given(SIGNATURES, st.data())
def test_from_header_mutated_raises_only_authentication_error(
    sig: RequestSignature, data: st.DataObject
) -> None:
    header = sig.to_header()
    at = data.draw(st.integers(0, len(header)), label="at")
    cut = data.draw(st.integers(0, 3), label="cut")
    insert = data.draw(st.text(alphabet="0fF ,=\n-x", max_size=3), label="insert")
    mutated = header[:at] + insert + header[at + cut :]
    try:
        parsed = RequestSignature.from_header(mutated)
    except AuthenticationError:
        return
    # Anything accepted means what it says (a leading zero in ts is accepted: the signature
    # covers the number, not the header text).
    assert RequestSignature.from_header(parsed.to_header()) == parsed
    assert parsed.to_header() == mutated or ", ts=0" in mutated


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Mailslot",
        "Bearer abc",
        "mailslot device={d}, ts=1, nonce={n}, sig={s}",
        "Mailslot device={D}, ts=1, nonce={n}, sig={s}",
        "Mailslot device={d}, ts=-1, nonce={n}, sig={s}",
        "Mailslot device={d}, ts=1234567890123456, nonce={n}, sig={s}",
        "Mailslot device={d},ts=1, nonce={n}, sig={s}",
        "Mailslot device={d}, ts=1, nonce={n}, sig={s}\n",
        "Mailslot device={d}, ts=1, nonce={n}, sig={s}, extra=1",
        "Mailslot device={d}0, ts=1, nonce={n}, sig={s}",
        "Mailslot device={d}, ts=1, nonce={n}, sig={s}00",
        "Mailslot device={d}, ts=١, nonce={n}, sig={s}",
    ],
)
def test_from_header_refuses_malformed(header: str) -> None:
    fields = {"d": "ab" * 16, "D": "AB" * 16, "n": "cd" * 16, "s": "ef" * 64}
    valid = "Mailslot device={d}, ts=1, nonce={n}, sig={s}".format(**fields)
    assert RequestSignature.from_header(valid).timestamp_ms == 1
    with pytest.raises(AuthenticationError):
        RequestSignature.from_header(header.format(**fields))


@CRYPTO
@given(METHODS, TARGETS, BODIES, NONCES, st.integers(-FRESHNESS_MS, FRESHNESS_MS))
def test_sign_verify_round_trip(device, method, target, body, nonce, skew) -> None:
    sig = sign_request(device, method, target, body, now_ms=NOW, nonce=nonce)
    assert sig.device_id == device.device_id
    parsed = RequestSignature.from_header(sig.to_header())
    verify_request(parsed, device.sign_public, method, target, body, now_ms=NOW + skew)
    # The method is case-insensitive (it is upper-cased before signing).
    verify_request(parsed, device.sign_public, method.lower(), target, body, now_ms=NOW)


@CRYPTO
@given(st.integers(FRESHNESS_MS + 1, 10**12), st.booleans())
def test_verify_refuses_stale_timestamps(device, skew: int, ahead: bool) -> None:
    sig = sign_request(device, "GET", "/v1/queue", b"", now_ms=NOW, nonce=b"n" * 16)
    with pytest.raises(AuthenticationError):
        verify_request(
            sig, device.sign_public, "GET", "/v1/queue", b"", now_ms=NOW + (-skew if ahead else skew)
        )


@CRYPTO
@given(METHODS, METHODS, TARGETS, TARGETS, BODIES, BODIES)
def test_verify_refuses_other_method_target_or_body(device, m1, m2, t1, t2, b1, b2) -> None:
    sig = sign_request(device, m1, t1, b1, now_ms=NOW, nonce=b"n" * 16)
    if (m1, t1, b1) == (m2, t2, b2):
        verify_request(sig, device.sign_public, m2, t2, b2, now_ms=NOW)
    else:
        with pytest.raises(AuthenticationError):
            verify_request(sig, device.sign_public, m2, t2, b2, now_ms=NOW)


@CRYPTO
@given(NONCES, st.integers(-FRESHNESS_MS, FRESHNESS_MS).filter(bool))
def test_verify_refuses_changed_nonce_or_timestamp(device, nonce: bytes, shift: int) -> None:
    sig = sign_request(device, "POST", "/v1/send", b"{}", now_ms=NOW, nonce=b"n" * 16)
    changed = [dataclasses.replace(sig, timestamp_ms=NOW + shift)]
    if nonce != sig.nonce:
        changed.append(dataclasses.replace(sig, nonce=nonce))
    for bad in changed:
        with pytest.raises(AuthenticationError):
            verify_request(bad, device.sign_public, "POST", "/v1/send", b"{}", now_ms=NOW)


def test_verify_refuses_another_devices_key(device, mallory) -> None:
    sig = sign_request(device, "GET", "/", b"", now_ms=NOW, nonce=b"n" * 16)
    with pytest.raises(AuthenticationError):
        verify_request(sig, mallory.sign_public, "GET", "/", b"", now_ms=NOW)


@settings(max_examples=200)
@given(
    st.binary(max_size=20),
    st.integers(NOW - 10, NOW + 10),
    st.binary(max_size=20),
    st.binary(max_size=70),
    st.binary(max_size=40),
)
def test_verify_arbitrary_signature_raises_only_authentication_error(
    device_id, ts, nonce, signature, key
) -> None:
    sig = RequestSignature(device_id, ts, nonce, signature)
    with pytest.raises(AuthenticationError):
        verify_request(sig, key, "GET", "/", b"", now_ms=NOW)
