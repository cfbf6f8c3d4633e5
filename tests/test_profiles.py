"""Hypothesis budgets come from a profile: `dev` is quick, `ci` runs every test's full budget."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

#: Properties that log every example they are given, one line each, to a file named after the test.
PROPERTIES = textwrap.dedent(
    """
    from pathlib import Path

    from hypothesis import given, settings, strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, rule

    LOG = Path(__file__).parent / "log"

    def log(name):
        with (LOG / name).open("a", encoding="utf-8") as file:
            file.write("x\\n")

    @given(st.binary(min_size=16))
    def test_profile_budget(data):
        log("profile_budget")

    @settings(max_examples=150)
    @given(st.binary(min_size=16))
    def test_own_budget(data):
        log("own_budget")

    class Machine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            log("machine")

        @rule(data=st.binary(min_size=16))
        def step(self, data):
            pass

    TestMachine = Machine.TestCase
    TestMachine.settings = settings(max_examples=150, stateful_step_count=2)
    """
)


def _examples(tmp_path: Path, env: dict[str, str]) -> dict[str, int]:
    """Run the properties under the suite's conftest; how many examples each one was given."""
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "test_properties.py").write_text(PROPERTIES, encoding="utf-8")
    (tmp_path / "log").mkdir()
    environ = {k: v for k, v in os.environ.items() if k not in {"CI", "HYPOTHESIS_PROFILE"}}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=tmp_path,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {
        log.name: len(log.read_text(encoding="utf-8").splitlines())
        for log in (tmp_path / "log").iterdir()
    }


def test_dev_is_the_default_and_caps_every_budget(tmp_path: Path) -> None:
    """Without $CI or $HYPOTHESIS_PROFILE, no property runs more than the dev profile's 10."""
    counts = _examples(tmp_path, {})

    assert set(counts) == {"profile_budget", "own_budget", "machine"}
    assert all(count <= 10 for count in counts.values()), counts


@pytest.mark.slow
@pytest.mark.parametrize("env", [{"HYPOTHESIS_PROFILE": "ci"}, {"CI": "true"}], ids=str)
def test_ci_runs_the_full_budgets(tmp_path: Path, env: dict[str, str]) -> None:
    """The ci profile runs Hypothesis' 100 examples, and a test's own larger budget in full."""
    counts = _examples(tmp_path, env)

    assert counts["profile_budget"] > 50, counts
    assert counts["own_budget"] > 100, counts
    assert counts["machine"] > 100, counts
