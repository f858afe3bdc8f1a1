"""TrainingSchedule: TrainingRuns made from a template on a cron schedule, on feature drift, or on request."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import (
    ApiModel,
    Condition,
    StatusModel,
    cel,
    conditions_field,
    duration_rule,
    rule,
)
from .modeldeployment import Prometheus
from .trainingrun import TrainingRunTemplate

ConcurrencyPolicy = Literal["Forbid", "Replace"]
TriggerType = Literal["cron", "drift", "manual"]

# Five fields (minute hour day-of-month month day-of-week) or a macro. The shape is checked here;
# values out of range (minute 61) pass the pattern and are refused by the operator's parser, with a
# False Ready condition (reason InvalidSchedule) and a warning event.
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|[0-9*/,-]+ +[0-9*/,-]+ +[0-9*/,?LW-]+ +[0-9A-Za-z*/,-]+ +[0-9A-Za-z*/,?L#-]+)$"
)
# The shape of an IANA time zone name (Europe/Berlin, America/Argentina/Buenos_Aires, UTC, Etc/GMT+5).
# Whether the name exists is for the operator's zone database to say (CEL has none): an unknown one
# gives a False Ready condition (reason InvalidTimeZone) naming spec.timeZone, and a warning event.
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
# The longest name whose runs' names (<name>-manual-<8 hex>) still fit a TrainingRun's 63.
SCHEDULE_NAME_LIMIT = 63 - len("-manual-") - 8


class DriftTrigger(ApiModel):
    """Retrain when a value stays above a threshold: by default the largest feature PSI the model's
    predictors export (slipway_input_psi), or the value of a PromQL query of your own."""

    model_config = cel(
        rule(
            "has(self.query) || self.threshold > 0.0",
            "spec.drift.threshold must be greater than 0 for the built-in feature drift (a PSI)",
            ".threshold",
        )
    )

    threshold: float = Field(
        description="The trigger fires when the value is above this (built-in feature drift: a PSI, e.g. 0.2)."
    )
    for_: str = Field(
        "10m",
        alias="for",
        description="How long the value must stay above the threshold before a run is made (e.g. 30m).",
        max_length=32,
        json_schema_extra=duration_rule("spec.drift.for"),
    )
    query: str | None = Field(
        None,
        description="A PromQL query returning one series, instead of the built-in feature drift; {{namespace}} "
        "and {{model}} are replaced by the schedule's namespace and spec.template.model.",
        min_length=1,
        max_length=4096,
    )
    prometheus: Prometheus | None = Field(
        None, description="The Prometheus to query; unset: the operator's default (chart value prometheus.url)."
    )


class TrainingScheduleSpec(ApiModel):
    """When to make a new TrainingRun from the template, and how many runs to keep."""

    model_config = cel(
        rule(
            "!has(self.timeZone) || has(self.schedule)",
            "spec.timeZone is the time zone of spec.schedule: set spec.schedule too, or leave spec.timeZone out",
            ".timeZone",
        )
    )

    template: TrainingRunTemplate = Field(description="The spec of every TrainingRun this schedule makes.")
    schedule: str | None = Field(
        None,
        description="A cron expression (minute hour day-of-month month day-of-week, or @daily, @hourly, ...) in "
        "spec.timeZone (default UTC). After a downtime only the latest missed time fires, once. Unset: no cron "
        "trigger.",
        max_length=128,
        pattern=CRON_PATTERN,
    )
    time_zone: str | None = Field(
        None,
        description="The IANA time zone spec.schedule is read in (e.g. Europe/Berlin), as a CronJob's "
        "spec.timeZone; unset: UTC. Across daylight-saving changes a time that the clocks skip fires at the "
        "change, and a fixed hour that they repeat fires once.",
        max_length=64,
        pattern=TIME_ZONE_PATTERN,
    )
    drift: DriftTrigger | None = Field(None, description="Retrain on input drift; unset: no drift trigger.")
    cooldown: str = Field(
        "1h",
        description="Least time between two runs made by cron or drift (a manual retrain ignores it).",
        max_length=32,
        json_schema_extra=duration_rule("spec.cooldown"),
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        "Forbid",
        description="When a trigger fires while a run is active: Forbid skips the trigger, Replace deletes the "
        "active run and starts the new one.",
    )
    successful_runs_history_limit: int = Field(3, ge=0, le=100, description="Succeeded runs kept; older ones go.")
    failed_runs_history_limit: int = Field(1, ge=0, le=100, description="Failed runs kept; older ones go.")
    suspend: bool = Field(False, description="Skip every trigger (each one is consumed, with an event) while true.")


class TriggerRecord(StatusModel):
    type: TriggerType = Field(description="cron, drift or manual.")
    time: str = Field(description="When it fired (RFC 3339).")
    value: str = Field("", description="What fired it: the cron time, the drift value, or the request id.")
    run: str = Field("", description="The TrainingRun it made.")


class SuccessfulRun(StatusModel):
    name: str = Field(description="The TrainingRun.")
    model_version: str | None = Field(None, description="The ModelVersion it produced.")
    completion_time: str | None = Field(None, description="When it finished (RFC 3339).")


class TrainingScheduleStatus(StatusModel):
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = conditions_field()
    last_trigger: TriggerRecord | None = Field(None, description="The last trigger that made a run.")
    last_schedule_time: str | None = Field(
        None, description="The latest cron time handled (fired or skipped), RFC 3339."
    )
    next_schedule_time: str | None = Field(None, description="The next cron time, RFC 3339.")
    last_manual_request: str | None = Field(None, description="The last retrain request id consumed.")
    drift_since: str | None = Field(
        None, description="Since when the drift value has been above the threshold (RFC 3339)."
    )
    drift_value: float | None = Field(None, description="The drift value last measured.")
    drift_skipped: str | None = Field(
        None, description="Why the drift held now is not acted on (the reason of the skip event already posted)."
    )
    active_runs: list[str] = Field(
        default_factory=list, description="The schedule's runs not yet finished.", max_length=100
    )
    last_successful_run: SuccessfulRun | None = Field(None, description="The newest run that succeeded.")
