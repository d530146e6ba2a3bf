"""Per-device request rate limiting: a token bucket per key, refilled continuously."""

from __future__ import annotations

from dataclasses import dataclass

from mailslot.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    """Allow ``rate`` requests per second per key with bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: dict[bytes | str, _Bucket] = {}

    def check(self, key: bytes | str, now_s: float) -> None:
        """Take one token for ``key`` or raise ``RateLimited`` with the seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory; forgetting grants a fresh burst
            bucket = self._buckets[key] = _Bucket(self._burst, now_s)
        bucket.tokens = min(self._burst, bucket.tokens + (now_s - bucket.updated_s) * self._rate)
        bucket.updated_s = now_s
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / self._rate
            raise RateLimited(
                f"too many requests; retry in {wait:.1f} s", details={"retry_after_s": round(wait, 3)}
            )
        bucket.tokens -= 1.0
