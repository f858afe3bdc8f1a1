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


def better(metric: str, value: float, than: float) -> bool:
    return value < than if metric in LOWER_IS_BETTER else value > than


def evaluate_gate(evaluation: Evaluation, metrics: dict[str, float], serving: float | None) -> GateVerdict:
    """Applies `minimum`/`maximum`, then `mustBeatServing` against the served version's metric.

    With nothing served yet (or a served version that never recorded the metric) there is
    nothing to beat, so only the thresholds apply.
    """
    metric = evaluation.metric
    value = metrics.get(metric)
    if value is None:
        return GateVerdict(False, metric, None, f"the manifest has no {metric}")
    if evaluation.minimum is not None and value < evaluation.minimum:
        return GateVerdict(False, metric, value, f"{metric} {value:.4f} is below the minimum {evaluation.minimum:g}")
    if evaluation.maximum is not None and value > evaluation.maximum:
        return GateVerdict(False, metric, value, f"{metric} {value:.4f} is above the maximum {evaluation.maximum:g}")
    if evaluation.must_beat_serving and serving is not None and not better(metric, value, serving):
        return GateVerdict(
            False, metric, value, f"{metric} {value:.4f} does not beat the serving version's {serving:.4f}"
        )
    beaten = (
        f", beating the serving version's {serving:.4f}" if evaluation.must_beat_serving and serving is not None else ""
    )
    return GateVerdict(True, metric, value, f"{metric} {value:.4f} passed the gate{beaten}")
