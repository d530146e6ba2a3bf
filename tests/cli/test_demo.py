"""`mailslot demo` runs the whole story against a real server and cleans up after itself."""

from __future__ import annotations

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
    assert "Traceback" not in result.stderr
    assert set(Path(tempfile.gettempdir()).glob("mailslot-demo-*")) == before
