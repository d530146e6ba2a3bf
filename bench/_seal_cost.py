"""Client cost of one more recipient device: ``seal_message`` against one bare ``hpke_seal``.

``seal_message`` signs and encrypts the body once, then wraps the content key once per device.
The per-device cost is the slope of a least-squares line through the time of sealing a 1 KB
message to 0, 1, 2, 4 and 8 devices; it is compared with one ``hpke_seal`` of a 32-byte key
(with an ``info`` of the real size), timed in the same rounds. Rounds are short and interleave
every case; each case keeps its fastest round (as ``timeit`` advises: slower rounds measure the
neighbours, not the code), which on a shared machine is far steadier than the median.
"""

from __future__ import annotations

import functools
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailslot.protocol import crypto
from mailslot.protocol.identity import DeviceKeys
from mailslot.protocol.message import KIND_TEXT, Content, seal_message, wrap_info

DEVICE_COUNTS = (0, 1, 2, 4, 8)


@dataclass
class SealCost:
    seal_us: dict[int, float]  # devices -> microseconds per seal_message (fastest round)
    hpke_us: float  # microseconds per bare hpke_seal (fastest round)
    per_device_us: float  # least-squares slope of seal_us over devices

    @property
    def ratio(self) -> float:
        return self.per_device_us / self.hpke_us


def _per_call_us(fn: Callable[[], object], calls: int) -> float:
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls * 1e6
    finally:
        if gc_was_on:
            gc.enable()


def _slope(points: dict[int, float]) -> float:
    xs, ys = list(points), list(points.values())
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return num / sum((x - mean_x) ** 2 for x in xs)


def measure(rounds: int, calls: int, size: int = 1024) -> SealCost:
    sender = DeviceKeys.generate()
    devices = [DeviceKeys.generate() for _ in range(max(DEVICE_COUNTS))]
    content = Content("alice", sender.device_id, ("alice", "bob"), os.urandom(16), 1, KIND_TEXT, b"x" * size)
    targets = {n: {k.device_id: k.enc_public for k in devices[:n]} for n in DEVICE_COUNTS}
    info = wrap_info(content.message_id, devices[0].device_id, sender.device_id, b"b" * (size + 140))
    key = os.urandom(crypto.AEAD_KEY_SIZE)
    public = devices[0].enc_public
    samples: dict[int, list[float]] = {n: [] for n in DEVICE_COUNTS}
    hpke: list[float] = []
    for _ in range(rounds + 1):  # the first round warms caches and is dropped
        for n in DEVICE_COUNTS:
            seal = functools.partial(seal_message, content, sender, targets[n])
            samples[n].append(_per_call_us(seal, calls))
        hpke.append(_per_call_us(functools.partial(crypto.hpke_seal, public, key, info), calls))
    fastest = {n: min(s[1:]) for n, s in samples.items()}
    return SealCost(fastest, min(hpke[1:]), _slope(fastest))
