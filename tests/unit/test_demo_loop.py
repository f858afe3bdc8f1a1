"""`slipway demo --closed-loop`: the pure parts of its chapter (the schedule it applies, the drifted value)."""

from __future__ import annotations

from pathlib import Path

from slipway.api.trainingschedule import TrainingScheduleSpec
from slipway.devstack import demo_loop
from slipway.devstack.stack import DevStack


def test_the_schedule_is_a_valid_drift_trigger_on_the_dev_stacks_run(tmp_path: Path) -> None:
    stack = DevStack(tmp_path)
    body = demo_loop.schedule(demo_loop.template(stack), "http://127.0.0.1:9090")
    spec = TrainingScheduleSpec.model_validate(body["spec"])
    assert spec.drift is not None and spec.drift.threshold == demo_loop.THRESHOLD and spec.drift.for_ == "15s"
    assert spec.template.evaluation.minimum == 0.7  # the gate shows version 2 on the same data, not enforced
    assert spec.template.evaluation.must_beat_serving is False
    assert spec.schedule is None and body["metadata"] == {"name": "churn-drift", "namespace": "ml"}


def test_the_drifted_value_is_the_middle_of_the_training_bins() -> None:
    manifest = {"profile": {"features": {"monthly_charges": {"edges": [10.0, 30.0, 62.5, 80.0, 110.0]}}}}
    assert demo_loop.drift_value(manifest) == 62.5
