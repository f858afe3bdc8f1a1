"""The evaluation gate: may a freshly trained model become a servable ModelVersion?"""

from __future__ import annotations

from typing import NamedTuple

from ..api.trainingrun import Evaluation

LOWER_IS_BETTER = {"logLoss"}


class GateVerdict(NamedTuple):
    passed: bool
    metric: str
    value: float | None
    message: str
    baseline: Baseline | None = None


class Baseline(NamedTuple):
    """What `mustBeatServing` compares with: the serving version's value of the metric.

    `on_this_data`: the job scored the serving model on this run's held-out split, so both numbers
    come from the same (fresh) data. Otherwise `value` is the metric the serving version recorded
    on its own, older data, and `note` says why the fair comparison was not possible.
    """

    version: int | None
    value: float | None
    on_this_data: bool
    note: str = ""

    def describe(self) -> str:
        """The comparand: "version 1's 0.7900 on the same data", or "version 1's recorded 0.7900 (why)"."""
        who = f"version {self.version}'s" if self.version is not None else "the serving version's"
        if self.on_this_data:
            return f"{who} {self.value:.4f} on the same data"
        note = f" ({self.note})" if self.note else ""
        return f"{who} recorded {self.value:.4f}{note}"


def better(metric: str, value: float, than: float) -> bool:
    return value < than if metric in LOWER_IS_BETTER else value > than


def evaluate_gate(evaluation: Evaluation, metrics: dict[str, float], serving: Baseline | float | None) -> GateVerdict:
    """Applies `minimum`/`maximum`, then `mustBeatServing` against the served version's metric.

    `serving` is a Baseline, or a bare float for the served version's recorded metric. With
    nothing served yet (or a served version with no value of the metric) there is nothing to
    beat, so only the thresholds apply. Without `mustBeatServing` the comparison is only shown.
    """
    metric = evaluation.metric
    value = metrics.get(metric)
    if value is None:
        return GateVerdict(False, metric, None, f"the manifest has no {metric}")
    if evaluation.minimum is not None and value < evaluation.minimum:
        return GateVerdict(False, metric, value, f"{metric} {value:.4f} is below the minimum {evaluation.minimum:g}")
    if evaluation.maximum is not None and value > evaluation.maximum:
        return GateVerdict(False, metric, value, f"{metric} {value:.4f} is above the maximum {evaluation.maximum:g}")
    baseline = Baseline(None, serving, False) if isinstance(serving, float | int) else serving
    if baseline is None:
        return GateVerdict(True, metric, value, f"{metric} {value:.4f} passed the gate")
    where = " on this run's held-out data" if baseline.on_this_data else ""
    if not evaluation.must_beat_serving:  # not enforced; the comparison is still worth showing
        shown = f" (mustBeatServing is off; {baseline.describe()})" if baseline.value is not None else ""
        return GateVerdict(True, metric, value, f"{metric} {value:.4f}{where} passed the gate{shown}", baseline)
    if baseline.value is None:
        why = f": {baseline.note}" if baseline.note else ""
        message = f"{metric} {value:.4f} passed the gate (version {baseline.version} has no {metric} to beat{why})"
        return GateVerdict(True, metric, value, message, baseline)
    if not better(metric, value, baseline.value):
        message = f"{metric} {value:.4f}{where} does not beat {baseline.describe()}"
        return GateVerdict(False, metric, value, message, baseline)
    return GateVerdict(True, metric, value, f"{metric} {value:.4f}{where}, beating {baseline.describe()}", baseline)
