"""`slipway demo`: its rollout timeline (queries, series, the PNG and the HTML page) and its pure parts."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from slipway.devstack import demo, timeline
from slipway.devstack.timeline import Event, Sample


def vector(**values: str) -> list[dict[str, Any]]:
    return [{"metric": {"revision": k.removeprefix("v")}, "value": [0, v]} for k, v in values.items()]


def rollout() -> list[Sample]:
    """v1 stable; v2 canary 25% -> 50% -> promoted; v3 at 25% failing, rolled back."""
    samples = []
    for t in range(60):
        if t < 10:
            w, phase = {1: 100}, "Stable"
        elif t < 20:
            w, phase = {1: 75, 2: 25}, "Progressing"
        elif t < 30:
            w, phase = {1: 50, 2: 50}, "Progressing"
        elif t < 40:
            w, phase = {2: 100}, "Stable"
        elif t < 50:
            w, phase = {2: 75, 3: 25}, "Progressing"
        else:
            w, phase = {2: 100, 3: 0}, "Degraded"
        serving = [v for v, x in w.items() if x > 0]
        samples.append(
            Sample(
                t=float(t),
                phase=phase,
                weights=w,
                error_rate={v: 0.25 if v == 3 else 0.0 for v in serving},
                latency_p95={v: 0.01 * v for v in serving},
                prediction_mean={v: 0.3 + 0.01 * v for v in serving},
                input_psi={v: 0.05 + (2.0 if 45 <= t < 50 else 0.0) for v in serving},  # drift, then a trigger
            )
        )
    return samples


EVENTS = [Event(10.0, "v2 canary"), Event(30.0, "v2 promoted"), Event(50.0, "v3 rolled back: error-rate")]


def test_queries_aggregate_by_revision_over_the_window() -> None:
    q = timeline.queries("ml", "churn", "10s")
    assert set(q) == {"requests", "errors", "latency_p95", "prediction_mean", "input_psi"}
    for promql in q.values():
        assert 'namespace="ml",model="churn"' in promql and "[10s]" in promql and "by (revision" in promql
    assert 'outcome="server_error"' in q["errors"]
    assert q["latency_p95"].startswith("histogram_quantile(0.95,")


def test_by_revision_skips_what_it_cannot_read() -> None:
    result = [
        *vector(v1="0.5", v2="NaN", v3="+Inf"),
        {"metric": {}, "value": [0, "1"]},
        {"metric": {"revision": "x"}, "value": [0, "1"]},
        {"metric": {"revision": "4"}},
    ]
    assert timeline.by_revision(result) == {1: 0.5}


def test_measure_gives_values_only_to_versions_with_requests() -> None:
    answers = {
        "requests": vector(v1="10", v2="4", v3="0"),
        "errors": vector(v2="1"),
        "latency_p95": vector(v1="0.02", v2="0.03", v3="0.5"),
        "prediction_mean": vector(v1="0.31", v2="0.4"),
        "input_psi": vector(v1="2.5", v3="0.1"),  # the drift a TrainingSchedule watches
    }
    measured = timeline.measure(answers)
    assert measured["input_psi"] == {1: 2.5}
    assert measured["error_rate"] == {1: 0.0, 2: 0.25}
    assert measured["latency_p95"] == {1: 0.02, 2: 0.03}
    assert measured["prediction_mean"] == {1: 0.31, 2: 0.4}
    assert timeline.measure({}) == {"error_rate": {}, "latency_p95": {}, "prediction_mean": {}, "input_psi": {}}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, {}),
        ({"stableVersion": 1, "canaryWeight": 0}, {1: 100}),
        ({"stableVersion": 1, "candidateVersion": 2, "canaryWeight": 25}, {1: 75, 2: 25}),
        ({"stableVersion": 2, "canaryWeight": 25}, {2: 100}),  # a weight without a candidate is stale
        ({"stableVersion": 2, "rolledBackVersion": 3}, {2: 100, 3: 0}),
        ({"stableVersion": 3, "previousVersion": 2}, {2: 0, 3: 100}),
    ],
)
def test_weights_from_the_status(status: dict[str, Any], expected: dict[int, int]) -> None:
    assert timeline.weights(status) == expected


def test_series_start_at_a_versions_first_sample_and_weights_fall_to_zero() -> None:
    samples = rollout()
    weights = timeline.series(samples, "weights")
    assert sorted(weights) == [1, 2, 3]
    assert weights[2][0] == (10.0, 25.0) and weights[1][-1] == (59.0, 0.0)  # v1 left the status: 0
    errors = timeline.series(samples, "error_rate")
    assert errors[3][0] == (40.0, 0.25) and errors[3][-1] == (59.0, None)  # v3 at 0%: no measurement
    assert timeline.versions(samples) == [1, 2, 3]


def test_the_svg_has_a_line_per_version_and_panel_broken_at_gaps() -> None:
    svg = timeline.render_svg(
        [
            Sample(0, prediction_mean={1: 0.3}),
            Sample(1, prediction_mean={1: 0.3}),
            Sample(2),
            Sample(3, prediction_mean={1: 0.4}),
        ],
        [],
    )
    group = re.search(r'<g id="series-v1-prediction_mean">\s*<path d="([^"]*)"', svg)
    assert group is not None, svg[:2000]
    assert group.group(1).count("M ") == 2  # the gap at t=2 splits the line in two
    assert timeline.render_svg([], []).startswith("<svg")  # nothing recorded still renders


def test_html_page_holds_the_chart_the_events_and_the_series(tmp_path: Path) -> None:
    page = timeline.render_html(rollout(), EVENTS, title="churn </script>")
    assert "<svg" in page and "churn &lt;/script&gt;" in page
    for key in ("weights", "error_rate", "latency_p95", "prediction_mean", "input_psi"):
        for version in (1, 2, 3):
            assert f'<g id="series-v{version}-{key}">' in page
    assert "v3 rolled back: error-rate" in page
    data = json.loads(re.search(r'id="timeline-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert len(data["samples"]) == 60 and data["samples"][45]["weights"] == {"2": 75, "3": 25}
    assert data["events"][2] == {"t": 50.0, "text": "v3 rolled back: error-rate"}


def test_write_produces_a_png_an_html_page_and_the_raw_samples(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    written = timeline.write(tmp_path / "demo", rollout(), EVENTS, title="churn")
    assert [p.name for p in written] == ["timeline.png", "timeline.html", "timeline.json"]
    png = (tmp_path / "demo" / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert "version 3" in (tmp_path / "demo" / "timeline.html").read_text()
    assert len(json.loads((tmp_path / "demo" / "timeline.json").read_text())["samples"]) == 60


def test_an_empty_recording_still_draws(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    timeline.write(tmp_path, [], [], title="nothing")
    assert (tmp_path / "timeline.png").stat().st_size > 0


# -- the demo's pure parts: live lines, the summary, its folder ------------------------------------

PROGRESSING = {
    "phase": "Progressing",
    "reason": "Analyzing",
    "stableVersion": 1,
    "candidateVersion": 2,
    "canaryWeight": 25,
    "step": 0,
    "analysis": [
        {"metric": "error-rate", "value": 0.0, "verdict": "Passed"},
        {"metric": "latency-p95", "value": None, "verdict": "Inconclusive"},
    ],
    "analysisFailures": 0,
    "analysisInconclusive": 1,
}
HISTORY = [
    {"version": 1, "outcome": "Promoted", "time": "t1", "reason": "first version"},
    {"version": 2, "outcome": "Promoted", "time": "t2", "reason": "passed analysis at every step"},
    {"version": 3, "outcome": "RolledBack", "time": "t3", "reason": "AnalysisFailed: error-rate 0.27 > 0.05"},
]


def test_a_live_line_shows_phase_step_weights_and_analysis() -> None:
    line = demo.describe(PROGRESSING)
    assert line.startswith("md churn: Progressing (Analyzing)  step 1/2  v1=75% v2=25%")
    assert "error-rate 0 passed, latency-p95 - inconclusive (failures 0, inconclusive 1)" in line
    assert demo.describe({}) == "md churn: Pending"
    stable = demo.describe({"phase": "Stable", "stableVersion": 2, "analysis": PROGRESSING["analysis"]})
    assert stable == "md churn: Stable  v2=100%"  # the last analysis belongs to a finished rollout


def test_a_new_line_only_when_the_rollout_changes() -> None:
    assert demo.change_key(PROGRESSING) == demo.change_key({**PROGRESSING, "message": "other words"})
    assert demo.change_key(PROGRESSING) != demo.change_key({**PROGRESSING, "lastAnalysisAt": "now"})


def test_progress_bar_is_bounded() -> None:
    assert demo.bar(0.5, 10) == "[#####.....]"
    assert demo.bar(-1, 4) == "[....]" and demo.bar(3, 4) == "[####]"


def test_off_a_terminal_progress_prints_on_change_or_now_and_then() -> None:
    out = io.StringIO()
    console = demo.Console(out, quiet_seconds=3600)
    console.progress("churn-1: Pending", key="Pending")
    console.progress("churn-1: Pending 2s", key="Pending")  # same key, too soon: not printed
    console.progress("churn-1: Running", key="Running")
    console.line("done")
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["churn-1: Pending", "churn-1: Running", "done"]
    assert "\r" not in out.getvalue()


def mv(number: int, run: str = "", passed: bool | None = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": "churn", "version": number, "metrics": {"auc": "0.86", "accuracy": "0.8"}}
    if run:
        spec["trainingRun"] = run
    if passed is not None:
        spec["gates"] = {"passed": passed}
    return {"metadata": {"name": f"churn-v{number}"}, "spec": spec}


def test_the_summary_names_versions_outcomes_history_and_commands(tmp_path: Path) -> None:
    status = {"phase": "Degraded", "reason": "AnalysisFailed", "stableVersion": 2, "rolledBackVersion": 3}
    lines = demo.summary(
        {**status, "history": HISTORY},
        [mv(2, "churn-2"), mv(1, "churn-1"), mv(3, passed=None)],
        {1: 71.4, 2: 80.0},
        {200: 9000, 500: 120},
        [tmp_path / "timeline.png", tmp_path / "timeline.html", tmp_path / "timeline.json"],
        tmp_path / "kubeconfig",
        [Path("/bin/kube"), Path("/venv/bin")],
        kept=True,
    )
    text = "\n".join(lines)
    assert "  v1  churn-1, trained in 71s, gates passed  accuracy=0.8 auc=0.86  -> Promoted" in lines
    assert "  v3  registered by hand  accuracy=0.8 auc=0.86  -> RolledBack" in lines
    assert "Result: version 1 promoted, version 2 promoted, version 3 rolled back" in lines
    assert "v3  RolledBack: AnalysisFailed: error-rate 0.27 > 0.05" in text
    assert "Traffic: 9120 requests through the gateway (200: 9000, 500: 120)" in lines
    assert f"Timeline: {tmp_path}/timeline.png  {tmp_path}/timeline.html" in lines
    assert f"  export KUBECONFIG={tmp_path}/kubeconfig" in lines
    assert "  export PATH=/bin/kube:/venv/bin:$PATH   # kubectl and kubectl-slipway" in lines
    for command in (
        "kubectl get tr,mv,md -n ml",
        "kubectl describe md churn -n ml",
        "kubectl slipway -n ml status churn",
    ):
        assert f"  {command}" in lines
    assert "until Ctrl-C" in text


def test_outcomes_keep_each_versions_last_word() -> None:
    history = [*HISTORY, {"version": 3, "outcome": "Promoted"}]
    assert demo.outcomes({"history": history}) == {1: "Promoted", 2: "Promoted", 3: "Promoted"}


def test_epochs_done_reads_the_newest_checkpoint(tmp_path: Path) -> None:
    assert demo.epochs_done(tmp_path / "nothing") == 0
    for index, body in enumerate(['{"epoch": 0}', '{"epoch": 2}', "half a wri", '{"other": 1}']):
        folder = tmp_path / "checkpoints" / "churn-1" / f"checkpoint_{index}"
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(body)
    assert demo.epochs_done(tmp_path) == 3


def test_the_demo_refuses_a_running_stack_and_a_folder_not_its_own(tmp_path: Path) -> None:
    (tmp_path / "dev.pid").write_text(str(os.getpid()))
    folder, why = demo.prepare(tmp_path)
    assert folder is None and "a dev stack is already running" in why and "slipway dev down" in why
    (tmp_path / "dev.pid").write_text("999999999")  # stale: that process is gone
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    folder, why = demo.prepare(tmp_path)
    assert folder is None and "is not a demo's folder" in why
    (tmp_path / "demo" / demo.MARKER).write_text("")
    (tmp_path / "demo" / "dev.pid").write_text(str(os.getpid()))
    folder, why = demo.prepare(tmp_path)
    assert folder is None and "a demo is already running" in why
    (tmp_path / "demo" / "dev.pid").unlink()
    folder, why = demo.prepare(tmp_path)  # a previous demo's folder: emptied for the new one
    assert folder == tmp_path / "demo" and why == ""
    assert sorted(p.name for p in folder.iterdir()) == [demo.MARKER]


def test_leftovers_are_the_processes_carrying_the_demos_mark(tmp_path: Path) -> None:
    marker = str(tmp_path / "demo")
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen(sleep, env={**os.environ, demo.MARKER_ENV: marker})
    naming_it = subprocess.Popen([*sleep, marker])  # e.g. a user's `slipway dev down --workdir <folder>`
    try:
        assert demo.leftovers(marker) == [ours.pid]
        assert demo.leftovers(marker + "-other") == []
    finally:
        for child in (ours, naming_it):
            child.kill()
            child.wait()
    assert demo.leftovers(marker) == []


def test_children_output_goes_to_the_log_and_ours_does_not(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    chatter = "print('chatter'); import sys; print('noise', file=sys.stderr)"
    with demo.children_output(tmp_path / "start.log"):
        subprocess.run([sys.executable, "-c", chatter], check=True)
    print("ours")
    out, err = capfd.readouterr()
    assert "chatter" not in out and "noise" not in err and "ours" in out
    assert sorted((tmp_path / "start.log").read_text().split()) == ["chatter", "noise"]


def test_raw_blocks_end_a_progress_line_first() -> None:
    out = io.StringIO()
    console = demo.Console(out)
    console.tty = True
    console.progress("training")
    console.raw("summary\n  v1")
    assert out.getvalue().endswith("\r\033[Ksummary\n  v1\n")
