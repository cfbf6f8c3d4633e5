"""The README's demo runs end to end and shows what it says it shows."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_the_demo_runs_the_sdk_end_to_end() -> None:
    """examples/demo.py exits 0: validate, pack twice identically, install, approve, enable."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(identical)" in out
    assert "5. installed in a SQLite registry: pending" in out
    assert "enabling before approval is refused: cannot enable plugin 'hello-plugin'" in out
    assert "plugins running for acme = ['hello-plugin']" in out
    assert "7. suspended: plugins running for acme = []" in out
    assert out.count(" by ") == 5  # five audit events: install, approve, enable, settings, suspend
