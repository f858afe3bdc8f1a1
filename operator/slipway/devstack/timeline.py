"""The demo's rollout timeline: samples of a ModelDeployment's rollout -> a PNG and an HTML page.

A sample holds, per model version (the predictor's `revision` label), the traffic weight the
ModelDeployment's status gives it and what Prometheus measured over the last few seconds: error
rate, p95 latency, mean prediction and input drift (the largest feature PSI of the predictor's
input monitor, the value a TrainingSchedule's drift trigger watches). One matplotlib figure is the
chart, saved as the PNG and inlined as SVG in the HTML page, so the page needs nothing but a browser.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the recording began
    phase: str = ""
    step: int | None = None
    weights: dict[int, int] = field(default_factory=dict)  # version -> traffic percent
    error_rate: dict[int, float] = field(default_factory=dict)  # version -> failed share of requests
    latency_p95: dict[int, float] = field(default_factory=dict)  # version -> seconds
    prediction_mean: dict[int, float] = field(default_factory=dict)  # version -> mean probability
    input_psi: dict[int, float] = field(default_factory=dict)  # version -> largest feature PSI


@dataclass(frozen=True)
class Event:
    t: float
    text: str


@dataclass(frozen=True)
class Panel:
    key: str  # the Sample field
    title: str
    unit: str
    floor: float  # the y axis reaches at least this high, so small noise does not fill the panel


PANELS = (
    Panel("weights", "traffic weight", "%", 100.0),
    Panel("error_rate", "error rate", "share", 0.05),
    Panel("latency_p95", "latency p95", "s", 0.05),
    Panel("prediction_mean", "prediction mean", "probability", 0.5),
    Panel("input_psi", "input drift", "largest feature PSI", 0.5),
)


def queries(namespace: str, model: str, window: str = "10s") -> dict[str, str]:
    """PromQL giving one value per revision, as the operator's analysis computes them."""
    selector = f'namespace="{namespace}",model="{model}"'

    def rate(metric: str, extra: str = "") -> str:
        labels = selector + (f",{extra}" if extra else "")
        return f"sum by (revision) (rate({metric}{{{labels}}}[{window}]))"

    return {
        "requests": rate("slipway_requests_total"),
        "errors": rate("slipway_requests_total", 'outcome="server_error"'),
        "latency_p95": "histogram_quantile(0.95, sum by (revision, le) "
        f"(rate(slipway_request_duration_seconds_bucket{{{selector}}}[{window}])))",
        "prediction_mean": f"{rate('slipway_prediction_value_sum')} / {rate('slipway_prediction_value_count')}",
        "input_psi": f"max by (revision) (max_over_time(slipway_input_psi{{{selector}}}[{window}]))",
    }


def by_revision(result: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """An instant vector as {version: value}; series without a numeric revision or value are left out."""
    values: dict[int, float] = {}
    for series in result:
        try:
            version = int(series["metric"]["revision"])
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            values[version] = value
    return values


def measure(answers: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, dict[int, float]]:
    """The Sample fields from the answers to `queries()`: a version with no requests has no values."""
    requests, errors = by_revision(answers.get("requests", [])), by_revision(answers.get("errors", []))
    serving = {v for v, rate in requests.items() if rate > 0}
    return {
        "error_rate": {v: errors.get(v, 0.0) / requests[v] for v in sorted(serving)},
        "latency_p95": {v: x for v, x in by_revision(answers.get("latency_p95", [])).items() if v in serving},
        "prediction_mean": {v: x for v, x in by_revision(answers.get("prediction_mean", [])).items() if v in serving},
        "input_psi": {v: x for v, x in by_revision(answers.get("input_psi", [])).items() if v in serving},
    }


def weights(status: Mapping[str, Any]) -> dict[int, int]:
    """Traffic per version from a ModelDeployment's status (stable, candidate; rolled back at 0)."""
    stable, candidate = status.get("stableVersion"), status.get("candidateVersion")
    canary = int(status.get("canaryWeight") or 0) if candidate is not None else 0
    result: dict[int, int] = {}
    for version in (status.get("rolledBackVersion"), status.get("previousVersion")):
        if version is not None:
            result[int(version)] = 0
    if stable is not None:
        result[int(stable)] = 100 - canary
    if candidate is not None:
        result[int(candidate)] = canary
    return result


def versions(samples: Sequence[Sample]) -> list[int]:
    found: set[int] = set()
    for sample in samples:
        for key in ("weights", "error_rate", "latency_p95", "prediction_mean", "input_psi"):
            found.update(getattr(sample, key))
    return sorted(found)


def series(samples: Sequence[Sample], key: str) -> dict[int, list[tuple[float, float | None]]]:
    """Per version, (t, value) from the version's first appearance on; None where it had no value.

    Weights are 0 once a version has appeared and left the status: no traffic is a value too.
    """
    out: dict[int, list[tuple[float, float | None]]] = {}
    for sample in samples:
        values: dict[int, float] = {v: float(x) for v, x in getattr(sample, key).items()}
        for version in sorted(set(out) | set(values)):
            value = values.get(version, 0.0 if key == "weights" else None)
            out.setdefault(version, []).append((sample.t, value))
    return out


def colour(version: int, all_versions: Sequence[int]) -> str:
    """One colour per version, in order: matplotlib's colour cycle (C0, C1, ...)."""
    return f"C{all_versions.index(version) % 10}" if version in all_versions else "C7"


def _top(panel: Panel, data: Mapping[int, Sequence[tuple[float, float | None]]]) -> float:
    highest = max((v for points in data.values() for _, v in points if v is not None), default=0.0)
    return panel.floor if panel.key == "weights" else max(panel.floor, highest * 1.1)


def render_svg(samples: Sequence[Sample], events: Sequence[Event], title: str = "") -> str:
    """The chart as an SVG element to inline in a page; each line is the group `series-v<version>-<panel>`."""
    import matplotlib.pyplot as plt

    chart, text = figure(samples, events, title), io.StringIO()
    chart.savefig(text, format="svg")
    plt.close(chart)
    svg = text.getvalue()
    return svg[svg.index("<svg") :]


def render_html(samples: Sequence[Sample], events: Sequence[Event], title: str = "Slipway rollout timeline") -> str:
    """A self-contained page: the chart (inline SVG), the events, and the samples as JSON."""
    rows = "\n".join(f"<tr><td>{event.t:.0f} s</td><td>{html.escape(event.text)}</td></tr>" for event in events)
    data = json.dumps(
        {"samples": [asdict(s) for s in samples], "events": [asdict(e) for e in events]}, separators=(",", ":")
    ).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td{padding:2px 12px;border-bottom:1px solid #ddd}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        "<p>Per model version: the traffic weight the ModelDeployment gave it, and what Prometheus measured "
        "over the last seconds (error rate, latency p95, mean prediction, input drift as the largest feature PSI). "
        "Dashed lines mark the events below.</p>\n"
        f"{render_svg(samples, events)}\n"
        f"<h2>Events</h2>\n<table>\n{rows}\n</table>\n"
        f'<script type="application/json" id="timeline-data">{data}</script>\n'
        "</body></html>\n"
    )


def figure(samples: Sequence[Sample], events: Sequence[Event], title: str = "") -> Any:
    """The four panels as one matplotlib figure (headless): a line per version, dashed at the events."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in the page's SVG
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    all_versions = versions(samples)
    chart, axes = plt.subplots(len(PANELS), 1, sharex=True, figsize=(11, 2.4 * len(PANELS)), squeeze=False)
    for axis, panel in zip(axes[:, 0], PANELS, strict=True):
        data = series(samples, panel.key)
        for version, points in data.items():
            values = [math.nan if v is None else v for _, v in points]  # a gap breaks the line
            axis.plot(
                [t for t, _ in points],
                values,
                color=colour(version, all_versions),
                label=f"v{version}",
                drawstyle="steps-post" if panel.key == "weights" else "default",  # a weight holds
                gid=f"series-v{version}-{panel.key}",
            )
        axis.set_ylabel(f"{panel.title}\n({panel.unit})")
        top = _top(panel, data)
        axis.set_ylim(-0.03 * top, 1.05 * top)  # a line at 0 or at the top stays visible
        axis.grid(alpha=0.3)
        for event in events:
            axis.axvline(event.t, color="#555", linestyle="--", linewidth=0.8)
    first = axes[0, 0]
    for index, event in enumerate(events):
        first.annotate(
            event.text,
            (event.t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10 - 10 * (index % 4)),
            textcoords="offset points",
            fontsize=7,
        )
    if all_versions:
        handles = [Line2D([], [], color=colour(v, all_versions), label=f"version {v}") for v in all_versions]
        first.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the deployment was created")
    if title:
        chart.suptitle(title)
    chart.tight_layout()
    return chart


def write(folder: Path, samples: Sequence[Sample], events: Sequence[Event], title: str = "") -> list[Path]:
    """timeline.png, timeline.html and timeline.json."""
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    page, raw, png = folder / "timeline.html", folder / "timeline.json", folder / "timeline.png"
    chart = figure(samples, events, title)
    chart.savefig(png, dpi=100)
    plt.close(chart)
    page.write_text(render_html(samples, events, title or "Slipway rollout timeline"))
    raw.write_text(json.dumps({"samples": [asdict(s) for s in samples], "events": [asdict(e) for e in events]}))
    return [png, page, raw]
