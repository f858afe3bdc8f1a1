"""`slipway demo` end to end, as a user runs it: one command, a summary, a timeline, nothing left over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
TIMEOUT = 1500  # seconds: the demo's own step deadlines are shorter; this only guards a hang


def processes_naming(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.mark.timeout(TIMEOUT + 60)
def test_the_demo_trains_promotes_rolls_back_draws_and_cleans_up(tmp_path: Path) -> None:
    slipway = Path(sys.executable).with_name("slipway")
    demo = subprocess.Popen(
        [str(slipway), "demo", "--workdir", str(tmp_path), "--no-keep"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a hang can be stopped as a whole, as Ctrl-C would
    )
    try:
        output, _ = demo.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGINT)  # the demo's own clean-up
        output, _ = demo.communicate(timeout=180)
        pytest.fail(f"the demo did not finish within {TIMEOUT}s:\n{output[-8000:]}")
    assert demo.returncode == 0, output[-8000:]
    assert "Result: version 1 promoted, version 2 promoted, version 3 rolled back" in output, output[-8000:]
    assert "AnalysisFailed" in output and "error-rate" in output  # the reason is shown
    assert "kubectl slipway -n ml status churn" in output and "export KUBECONFIG=" in output
    for name in ("timeline.png", "timeline.html"):
        path = tmp_path / "demo" / name
        assert path.exists() and path.stat().st_size > 1000, path
    page = (tmp_path / "demo" / "timeline.html").read_text()
    for version in (1, 2, 3):
        assert f'<g id="series-v{version}-weights">' in page
    assert '<g id="series-v3-error_rate">' in page
    assert processes_naming(str(tmp_path)) == []
    assert "everything the demo started is stopped" in output
