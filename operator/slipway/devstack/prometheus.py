"""A real Prometheus for the dev stack, scraping every ready model server.

The serving executor writes the scrape targets to `<workdir>/prometheus-targets.json` (file
service discovery, the format `file_sd_configs` reads); Prometheus picks changes up by itself.
Targets carry `namespace`, `isvc` and `pod` as a Kubernetes service discovery would; `model` and
`revision` come from the predictor's own metric labels.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from prometheus_api_client import PrometheusConnect

from ..controlplane.components import Component, healthy, start_all
from ..controlplane.server import free_port
from . import sysdeps

TARGETS_FILE = "prometheus-targets.json"
JOB = "slipway-predictors"


class ScrapeTarget(NamedTuple):
    address: str  # host:port
    namespace: str
    isvc: str
    pod: str


def targets_content(targets: Iterable[ScrapeTarget]) -> list[dict[str, Any]]:
    """The file_sd document: one group per target, in a stable order."""
    return [
        {"targets": [t.address], "labels": {"namespace": t.namespace, "isvc": t.isvc, "pod": t.pod}}
        for t in sorted(set(targets))
    ]


def write_targets(path: Path, targets: Iterable[ScrapeTarget]) -> bool:
    """Writes the targets file atomically (Prometheus never reads half a file); False when unchanged."""
    text = json.dumps(targets_content(targets), indent=1) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)
    return True


def config(targets_file: Path, scrape_interval: str) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,  # may not exceed the interval
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {
                "job_name": JOB,
                # The file is watched; the refresh interval is only the fallback re-read.
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "5s"}],
            }
        ],
    }


class LocalPrometheus:
    """`prometheus` as a child process on a fixed local port; stop() and start() keep port and data."""

    def __init__(self, workdir: Path, port: int | None = None, scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        self.folder = workdir / "prometheus"
        self.targets_file = workdir / TARGETS_FILE
        self.port = port or free_port()
        self.scrape_interval = scrape_interval
        self.component: Component | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.component.proc if self.component else None

    def start(self, timeout: float = 60) -> None:
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            write_targets(self.targets_file, [])
        conf = self.folder / "prometheus.yml"
        conf.write_text(yaml.safe_dump(config(self.targets_file, self.scrape_interval), sort_keys=False))
        argv = [
            str(sysdeps.prometheus()),
            f"--config.file={conf}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        self.component = Component("prometheus", argv, self.ready)
        start_all([self.component], None, self.workdir, timeout)

    def ready(self) -> bool:
        return healthy(f"{self.url}/-/ready")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM: Prometheus flushes its write-ahead log, so a restart keeps the data."""
        if self.component is not None:
            self.component.stop(timeout)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises on an API error)."""
        result: list[dict[str, Any]] = PrometheusConnect(self.url).custom_query(promql)
        return result
