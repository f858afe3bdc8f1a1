"""`slipway demo` end to end, as a user runs it: one command, a summary, a timeline, nothing left over.

The closed-loop chapter (`slipway demo --closed-loop`) adds a training run and a rollout, minutes
on two cores, so it is opt-in for users and its test runs only with SLIPWAY_DEMO_CLOSED_LOOP=1
(`make e2e` does not set it).
"""

from __future__ import annotations

import json
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


def play(tmp_path: Path, *flags: str, timeout: float = TIMEOUT) -> str:
    """Runs the demo as a user does; its output, after checking that it ended well and left nothing behind."""
    slipway = Path(sys.executable).with_name("slipway")
    demo = subprocess.Popen(
        [str(slipway), "demo", "--workdir", str(tmp_path), "--no-keep", *flags],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a hang can be stopped as a whole, as Ctrl-C would
    )
    try:
        output, _ = demo.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGINT)  # the demo's own clean-up
        output, _ = demo.communicate(timeout=180)
        pytest.fail(f"the demo did not finish within {timeout:.0f}s:\n{output[-8000:]}")
    assert demo.returncode == 0, output[-8000:]
    assert processes_naming(str(tmp_path)) == []
    assert "everything the demo started is stopped" in output
    return output


@pytest.mark.timeout(TIMEOUT + 60)
def test_the_demo_trains_promotes_rolls_back_draws_and_cleans_up(tmp_path: Path) -> None:
    output = play(tmp_path)
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


CLOSED_LOOP_TIMEOUT = TIMEOUT + 600


@pytest.mark.skipif(not os.environ.get("SLIPWAY_DEMO_CLOSED_LOOP"), reason="opt-in: SLIPWAY_DEMO_CLOSED_LOOP=1")
@pytest.mark.timeout(CLOSED_LOOP_TIMEOUT + 60)
def test_the_demo_closes_the_loop(tmp_path: Path) -> None:
    """`--closed-loop`: drift triggers a retraining on fresh data, whose gate shows version 2 scored on the
    same data, and the new version rolls out by itself; the timeline shows the drift and the trigger."""
    output = play(tmp_path, "--closed-loop", timeout=CLOSED_LOOP_TIMEOUT)
    assert "Result: version 1 promoted, version 2 promoted, version 3 rolled back, version 4 promoted" in output, (
        output[-8000:]
    )
    assert "drift trigger fired at PSI" in output and "TrainingRun churn-drift-drift-" in output
    assert "on this run's held-out data passed the gate (mustBeatServing is off; version 2's" in output
    page = (tmp_path / "demo" / "timeline.html").read_text()
    assert '<g id="series-v2-input_psi">' in page and "drift trigger: churn-drift-drift-" in page
    assert '<g id="series-v4-weights">' in page
    samples = json.loads((tmp_path / "demo" / "timeline.json").read_text())["samples"]
    drift = [sample["input_psi"].get("2") for sample in samples if sample["input_psi"].get("2") is not None]
    assert drift and max(drift) > 0.5 > min(drift), drift  # calm, then the drift that fired the trigger
