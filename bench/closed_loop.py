"""The closed loop: time from drift onset to the retrained version serving all traffic.

Runs the closed-loop e2e scenario (tests/e2e/test_closed_loop_e2e.py: the dev stack, version 1
serving `version: latest` under steady load, a TrainingSchedule with a drift trigger, drift injected
into the live traffic and a fresh period of the same shifted data appended to the offline store and
materialized (`DevStack.refresh_offline`), so the retrain trains on fresh data and its
`mustBeatServing` scores the serving version on it) `--runs` times, and reads each run's stages from
the objects' own status timestamps (second resolution), relative to the moment the drift began
(the refresh, about 10-20 s on two cores, counts in "drift detected"):

  drift detected      the schedule's hold began (status.driftSince)
  trigger fired       status.lastTrigger.time: the TrainingRun was made
  training done       the run's status.completionTime
  version registered  the ModelVersion's creationTimestamp
  rollout started     the deployment's status.rolloutStartedAt for the new version
  promoted            the deployment's history entry `Promoted` for it

The scenario itself fixes the knobs that dominate: the predictors' input window (20 s), the drift
hold (`for: 15s`), a CPU training run of 6 epochs on 2 Ray workers, and a canary of two steps
(25%, 50%; 2 s pauses, analysis every 3 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = (
    "drift_detected",
    "trigger_fired",
    "training_done",
    "version_registered",
    "rollout_started",
    "promoted",
)


def one_run(folder: Path) -> dict[str, float]:
    timeline = folder / "timeline.json"
    env = {**os.environ, "SLIPWAY_CLOSED_LOOP_TIMELINE": str(timeline)}
    command = [sys.executable, "-m", "pytest", "tests/e2e/test_closed_loop_e2e.py", "-x", "-q"]
    command += ["-p", "no:cacheprovider", f"--basetemp={folder / 'stack'}"]
    result = subprocess.run(command, cwd=REPO, env=env, check=False)
    if result.returncode != 0 or not timeline.exists():
        raise SystemExit(f"the closed-loop scenario failed (pytest exit {result.returncode}); see its output above")
    figures: dict[str, float] = json.loads(timeline.read_text())
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    runs = []
    for number in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="closed-loop-") as tmp:
            runs.append(one_run(Path(tmp)))
        print(f"run {number + 1}: " + ", ".join(f"{s} {runs[-1][s]:.0f}s" for s in STAGES), flush=True)
    print(f"\n{'stage':<20}{'since drift onset (median)':>28}{'stage alone (median)':>24}")
    previous = [0.0] * len(runs)
    for stage in STAGES:
        values = [run[stage] for run in runs]
        deltas = [v - p for v, p in zip(values, previous, strict=True)]
        print(f"{stage:<20}{statistics.median(values):>26.0f} s{statistics.median(deltas):>22.0f} s")
        previous = values
    out = REPO / "bench" / "results" / "closed_loop.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(runs, indent=2))
    print(f"\nraw figures: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
