"""TrainingSchedule -> one TrainingRun per trigger, from the schedule's template."""

from __future__ import annotations

from typing import Any

from ..api.resources import (
    MANAGED_BY,
    MODEL_LABEL,
    SCHEDULE_LABEL,
    TRAINING_RUNS,
    TRIGGER_LABEL,
    TRIGGER_VALUE_ANNOTATION,
)
from ..api.trainingrun import TrainingRunTemplate
from ..api.trainingschedule import TriggerRecord


def build_scheduled_run(
    schedule: str, namespace: str, template: TrainingRunTemplate, trigger: TriggerRecord
) -> dict[str, Any]:
    """The TrainingRun `trigger` asks for: named by the trigger (trigger.run), labelled with its
    schedule and trigger type so the schedule finds its runs; the owner reference is the caller's."""
    return {
        "apiVersion": TRAINING_RUNS.api_version,
        "kind": TRAINING_RUNS.kind,
        "metadata": {
            "name": trigger.run,
            "namespace": namespace,
            "labels": {
                **MANAGED_BY,
                SCHEDULE_LABEL: schedule,
                MODEL_LABEL: template.model,
                TRIGGER_LABEL: trigger.type,
            },
            "annotations": {TRIGGER_VALUE_ANNOTATION: f"{trigger.type} {trigger.value} at {trigger.time}"},
        },
        "spec": template.model_dump(by_alias=True, exclude_none=True),
    }
