"""The Hypothesis profiles: fixed in CI (reproducible), random locally (exploring)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import settings

from tests.conftest import hypothesis_profile

ROOT = Path(__file__).resolve().parents[1]


def test_ci_is_derandomized_and_local_runs_are_random() -> None:
    assert hypothesis_profile({"CI": "true"}) == "ci"
    assert hypothesis_profile({"CI": "TRUE"}) == "ci"
    assert hypothesis_profile({}) == "dev"
    assert hypothesis_profile({"CI": "false"}) == "dev"
    ci, dev = settings.get_profile("ci"), settings.get_profile("dev")
    assert ci.derandomize is True and ci.database is None
    assert dev.derandomize is False


def test_the_loaded_profile_follows_the_environment() -> None:
    expected = os.environ.get("CI", "").strip().lower() == "true"
    assert settings.default.derandomize is expected


_PROBE = """
import os
from hypothesis import given, strategies as st
@given(st.integers())
def test_probe(n):
    with open(os.environ["PROBE_OUT"], "a") as f:
        f.write(f"{n}\\n")
"""


def _probe_run(tmp_path: Path, ci: str, name: str) -> str:
    seen = tmp_path / name
    probe = tmp_path / "test_probe_hyp.py"
    probe.write_text(_PROBE)
    conftest = tmp_path / "conftest.py"
    conftest.write_text("from tests.conftest import *  # noqa: F403\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT), "PROBE_OUT": str(seen)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "-n", "0",
         str(probe), "--rootdir", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return seen.read_text()


def test_two_ci_runs_draw_the_same_examples(tmp_path: Path) -> None:
    first = _probe_run(tmp_path, "true", "first.txt")
    assert first.count("\n") > 10
    assert first == _probe_run(tmp_path, "true", "second.txt")
