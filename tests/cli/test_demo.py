"""`mailslot demo` runs the whole story against a real server and cleans up after itself."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path


def test_demo_runs_and_cleans_up() -> None:
    before = set(Path(tempfile.gettempdir()).glob("mailslot-demo-*"))
    result = subprocess.run(
        [sys.executable, "-m", "mailslot", "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert "approved it: device list now signed" in out
    assert "server still holds the body: False" in out
    assert "codes match: True" in out
    assert out.count("lunch-menu.txt") >= 3
    assert "demo finished" in out
    _assert_trust_steps(out)
    assert "Traceback" not in result.stderr
    assert set(Path(tempfile.gettempdir()).glob("mailslot-demo-*")) == before


def _assert_trust_steps(out: str) -> None:
    """The trust part of the story: recovery codes, alerts, a removed device, a key rotation."""
    # A recovery code per registration (alice, bob, carol), never shown in full.
    assert len(re.findall(r"recovery code issued: [A-Z0-9]{4}-····-…", out)) == 3
    assert not re.search(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}", out)
    assert "alert on alice/phone: device 'laptop' added, approved by 'phone'" in out
    assert "alert on bob/phone: device 'tablet' removed, approved by 'phone'" in out
    # The lost tablet is told who removed it; new mail skips it.
    assert "bob/tablet refused: this device was removed from account bob by device 'phone'" in out
    counts = re.findall(r"accepted for (\d+) devices, id \S+ \(her first message: (\d+)\)", out)
    after, before = map(int, counts[0])
    assert after == before - 1
    assert out.count("“Did you find your tablet?”") == 2  # bob/phone and alice/laptop, not the tablet
    assert "bob/phone ← alice/phone (to bob)" in out
    assert "notice on alice/phone: bob's devices changed: device 'tablet' removed" in out
    # A forced key rotation: a new key, and mail still arrives on the rotated device.
    old, new = re.findall(r"rotated: True; its key ([0-9a-f ]+?) → ([0-9a-f ]+?) \(", out)[0]
    assert old != new
    assert re.search(r"alice/laptop ← bob/phone \(to alice\) \S+ “Found it\.", out)
