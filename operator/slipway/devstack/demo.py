"""`slipway demo`: the whole platform on one machine, with real parts, in a few minutes.

It brings up the dev stack in `<workdir>/demo/` (a control plane, the operator, Ray, Feast, model
servers behind nginx, Prometheus) and plays the story the e2e tests check:

1. TrainingRun churn-1 trains version 1 (Feast -> Ray Train); ModelDeployment churn (`version:
   latest`, Canary) serves it, and steady traffic starts (the load generator, loopback only);
2. TrainingRun churn-2 trains version 2, which rolls out by itself as a canary through every step
   and is promoted on Prometheus analysis;
3. version 3, version 2's model made to fail half its calls (`pipelines.predictor.faults`) and
   registered by hand, is rolled back, and the demo shows why;
4. with `--closed-loop` (`demo_loop`, a few minutes more): the world moves (fresh data with one
   feature shifted, offline, online and in the traffic), a TrainingSchedule's drift trigger makes a
   TrainingRun on the fresh data, it beats the serving version on that data, and rolls out by
   itself under `version: latest` and is promoted.

It samples the rollout every second into `timeline.png` and `timeline.html` (see `timeline`; the
input drift is a panel there, each step and the drift trigger a marker).
Every step has a deadline; a missed one ends the demo with the step's name and exit status 1.
Whatever ends it (success, a failure, Ctrl-C, `slipway dev down --workdir <workdir>/demo`), it
stops everything it started. On a terminal the stack stays up after the summary, for kubectl,
until Ctrl-C (`--no-keep` stops at once).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, TypeVar, cast

import psutil
from kubernetes import client, config

from ..api.resources import MODEL_DEPLOYMENTS, MODEL_VERSIONS, TRAINING_RUNS, Resource
from ..controlplane.assets import REPO_ROOT
from . import demo_loop, timeline
from .modelserver import marked
from .stack import DOMAIN, NAMESPACE, PID_FILE, DevStack
from .traffic import LoadGenerator

DEMO_DIR = "demo"
MARKER = ".slipway-demo"  # a folder with it is the demo's own: a new run may wipe it
MARKER_ENV = "SLIPWAY_DEMO"  # every process the demo starts inherits it (see `leftovers`)
MODEL = "churn"
HOST = f"{MODEL}.{NAMESPACE}.{DOMAIN}"
STEPS = [{"weight": 25, "pause": "10s"}, {"weight": 50, "pause": "10s"}]
CANARY: dict[str, object] = {
    "type": "Canary",
    "progressDeadline": "180s",
    "canary": {
        "steps": STEPS,
        "analysis": {
            "interval": "5s",
            "failureLimit": 1,
            "metrics": [
                {"name": "error-rate", "max": 0.05},
                {"name": "latency-p95", "max": 1.0},  # seconds; two busy cores are slow
                # A 5 s window at 25% holds a few dozen requests from customers of very different risk:
                # their mean moves by ~0.05 by chance alone. A shifted model moves it by far more.
                {"name": "prediction-mean-shift", "max": 0.25},
            ],
        },
    },
}
RUNS: dict[int, tuple[str, dict[str, str]]] = {  # version -> (TrainingRun, hyperparameters)
    1: ("churn-1", {"epochs": "5", "batchSize": "256", "learningRate": "0.01"}),
    2: ("churn-2", {"epochs": "8", "batchSize": "256", "learningRate": "0.01"}),
}
FAULT = ("--error-rate", "0.5")  # per call; about 0.25 per request under concurrent batching
RATE = 30.0  # requests per second, for the rest of the demo
CUSTOMERS = [{"customer_id": 1001 + i} for i in range(400)]  # the generated data's ids
TRAIN_TIMEOUT, SERVE_TIMEOUT, ROLLOUT_TIMEOUT = 900.0, 240.0, 300.0
AFTERMATH = 10.0  # seconds recorded after the rollback, so the timeline shows the recovery
T = TypeVar("T")
Render = Callable[[dict[str, Any]], str]


class DemoFailed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step, self.message = step, message


class Console:
    """Lines stamped with the time since the start; on a terminal, one progress line redrawn in place."""

    def __init__(self, stream: TextIO | None = None, quiet_seconds: float = 15.0) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.quiet_seconds = quiet_seconds  # off a terminal, a progress line at most this often
        self._open = False
        self._last: tuple[float, object] = (0.0, None)
        self._lock = threading.Lock()

    def stamp(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"[{seconds // 60:02d}:{seconds % 60:02d}]"

    def line(self, text: str = "") -> None:
        """A stamped line; with no text, only ends a progress line on screen."""
        with self._lock:
            if self._open:
                self.stream.write("\r\033[K")
                self._open = False
            if text:
                self.stream.write(f"{self.stamp()} {text}\n")
            self.stream.flush()

    def raw(self, text: str) -> None:
        """Text as it is (a block: the summary, a status view)."""
        self.line()
        with self._lock:
            self.stream.write(text.rstrip("\n") + "\n")
            self.stream.flush()

    def progress(self, text: str, key: object = None) -> None:
        """A progress line: redrawn on a terminal, else printed when `key` changes or now and then."""
        if not self.tty:
            now = time.monotonic()
            if key != self._last[1] or now - self._last[0] >= self.quiet_seconds:
                self._last = (now, key)
                self.line(text)
            return
        with self._lock:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r\033[K" + f"{self.stamp()} {text}"[:width])
            self.stream.flush()
            self._open = True

    @contextlib.contextmanager
    def ticking(self, text: str) -> Iterator[None]:
        """Elapsed time on the progress line while the caller blocks."""
        stop, started = threading.Event(), time.monotonic()

        def tick() -> None:
            while not stop.wait(1.0):
                self.progress(f"{text} ({time.monotonic() - started:.0f}s)", key=text)

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def bar(fraction: float, width: int = 20) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def describe(status: Mapping[str, Any], steps: int = len(STEPS)) -> str:
    """One line per rollout state: phase, step, weights per version, the last analysis."""
    text = f"md {MODEL}: {status.get('phase', 'Pending')}"
    if status.get("reason"):
        text += f" ({status['reason']})"
    if status.get("candidateVersion") is not None and status.get("step") is not None:
        text += f"  step {int(status['step']) + 1}/{steps}"
    shares = timeline.weights(status)
    if shares:
        text += "  " + " ".join(f"v{v}={w}%" for v, w in sorted(shares.items()))
    results = status.get("analysis") or []
    if results and status.get("candidateVersion") is not None:
        shown = []
        for result in results:
            value = result.get("value")
            number = "-" if value is None else f"{value:.3g}"
            shown.append(f"{result.get('metric')} {number} {str(result.get('verdict', '')).lower()}")
        text += "  analysis: " + ", ".join(shown)
        text += f" (failures {status.get('analysisFailures', 0)}, inconclusive {status.get('analysisInconclusive', 0)})"
    return text


def change_key(status: Mapping[str, Any]) -> tuple[object, ...]:
    fields = ("phase", "reason", "stableVersion", "candidateVersion", "canaryWeight", "step", "lastAnalysisAt")
    return tuple(status.get(f) for f in fields)


def outcomes(status: Mapping[str, Any]) -> dict[int, str]:
    """Each version's last rollout outcome in the ModelDeployment's history."""
    return {int(entry["version"]): str(entry["outcome"]) for entry in status.get("history", [])}


def summary(
    status: Mapping[str, Any],
    model_versions: Sequence[Mapping[str, Any]],
    trained_seconds: Mapping[int, float],
    requests: Mapping[int, int],
    files: Sequence[Path],
    kubeconfig: Path,
    path_dirs: Sequence[Path],
    kept: bool,
) -> list[str]:
    """The closing report: versions with metrics and outcome, rollout history, traffic, where to look."""
    done = outcomes(status)
    words = {"Promoted": "promoted", "RolledBack": "rolled back"}
    lines = ["Versions (kubectl get mv -n ml):"]
    for mv in sorted(model_versions, key=lambda m: int(m["spec"]["version"])):
        spec, number = mv["spec"], int(mv["spec"]["version"])
        metrics = " ".join(f"{k}={v}" for k, v in sorted((spec.get("metrics") or {}).items())) or "no metrics"
        source = spec.get("trainingRun") or "registered by hand"
        took = f", trained in {trained_seconds[number]:.0f}s" if number in trained_seconds else ""
        gates = (spec.get("gates") or {}).get("passed")
        gate = "" if gates is None else ", gates passed" if gates else ", gates FAILED"
        lines.append(f"  v{number}  {source}{took}{gate}  {metrics}  -> {done.get(number, 'not rolled out')}")
    lines.append("Rollout history (kubectl describe md churn -n ml):")
    for entry in status.get("history", []):
        lines.append(f"  {entry.get('time', '')}  v{entry['version']}  {entry['outcome']}: {entry.get('reason', '')}")
    lines.append(f"Now: {describe(status)}")
    if requests:
        counts = ", ".join(f"{'no answer' if code == 0 else code}: {n}" for code, n in sorted(requests.items()))
        lines.append(f"Traffic: {sum(requests.values())} requests through the gateway ({counts})")
    lines.append("Result: " + ", ".join(f"version {v} {words.get(o, o)}" for v, o in sorted(done.items())))
    lines.append("Timeline: " + "  ".join(str(p) for p in files if p.suffix in (".png", ".html")))
    lines.append(
        "Look around" + (" (the stack is up until Ctrl-C):" if kept else " (rerun with --keep to do so live):")
    )
    lines.append(f"  export KUBECONFIG={kubeconfig}")
    lines.append(f"  export PATH={':'.join(str(p) for p in path_dirs)}:$PATH   # kubectl and kubectl-slipway")
    lines += [
        "  kubectl get tr,mv,md -n ml",
        "  kubectl describe md churn -n ml",
        "  kubectl slipway -n ml status churn",
    ]
    return lines


class Recorder:
    """Samples the ModelDeployment's status and Prometheus every `interval` seconds, in a thread."""

    def __init__(self, stack: DevStack, interval: float = 1.0) -> None:
        self.stack, self.interval = stack, interval
        self.api = client.CustomObjectsApi(config.new_client_from_config(str(stack.kubeconfig)))  # type: ignore[no-untyped-call]
        self.queries = timeline.queries(NAMESPACE, MODEL, "10s")
        self.samples: list[timeline.Sample] = []
        self.events: list[timeline.Event] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=15)

    def mark(self, text: str) -> None:
        self.events.append(timeline.Event(round(time.monotonic() - self.started, 1), text))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed sample is a gap in the picture, no more
                self.samples.append(self.sample())

    def sample(self) -> timeline.Sample:
        t = round(time.monotonic() - self.started, 2)
        status = _status(self.api)
        answers: dict[str, list[dict[str, Any]]] = {}
        for key, promql in self.queries.items():
            with contextlib.suppress(Exception):  # Prometheus busy or down: no value this second
                answers[key] = self.stack.prometheus.query(promql)
        measured = timeline.measure(answers)
        return timeline.Sample(
            t=t,
            phase=str(status.get("phase", "")),
            step=status.get("step"),
            weights=timeline.weights(status),
            error_rate=measured["error_rate"],
            latency_p95=measured["latency_p95"],
            prediction_mean=measured["prediction_mean"],
            input_psi=measured["input_psi"],
        )


def _get(api: client.CustomObjectsApi, kind: Resource, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], api.get_namespaced_custom_object(*kind.ref[:2], NAMESPACE, kind.plural, name))


def _list(api: client.CustomObjectsApi, kind: Resource) -> list[dict[str, Any]]:
    listed = cast(dict[str, Any], api.list_namespaced_custom_object(*kind.ref[:2], NAMESPACE, kind.plural))
    return cast(list[dict[str, Any]], listed["items"])


def _md(api: client.CustomObjectsApi) -> dict[str, Any]:
    return _get(api, MODEL_DEPLOYMENTS, MODEL)


def _status(api: client.CustomObjectsApi) -> dict[str, Any]:
    return cast(dict[str, Any], _md(api).get("status") or {})


class Demo:
    """The story, step by step; `close()` undoes whatever `play()` got to."""

    def __init__(self, folder: Path, console: Console, render: Render | None = None, closed_loop: bool = False) -> None:
        self.folder, self.console, self.render = folder, console, render
        self.closed_loop = closed_loop  # play the closed-loop chapter too (demo_loop)
        self._stack: DevStack | None = None  # made in the first step: it may build the control plane
        self.api: client.CustomObjectsApi | None = None
        self.recorder: Recorder | None = None
        self.load: LoadGenerator | None = None
        self.trained: dict[int, float] = {}
        self.files: list[Path] = []
        self.current = "prepare"
        self.last_seen = ""

    # -- the story ---------------------------------------------------------------------------------
    def play(self) -> None:
        with self.stage("start the dev stack (control plane, KServe, operator, Ray, Feast data, nginx, Prometheus)"):
            self.console.line("the first run builds the control plane and KServe and fetches nginx and Prometheus")
            with self.console.ticking("starting the dev stack"), children_output(self.folder / "start.log"):
                self._stack = DevStack(self.folder, serving_env=demo_loop.SERVING_ENV if self.closed_loop else None)
                self._stack.start()
            self.api = client.CustomObjectsApi(config.new_client_from_config(str(self.stack.kubeconfig)))  # type: ignore[no-untyped-call]
        with self.stage("train version 1 (TrainingRun churn-1: Feast features -> Ray Train)"):
            self.train(1)
        with self.stage("serve version 1 (ModelDeployment churn, version: latest, Canary)"):
            self.create(MODEL_DEPLOYMENTS, self.stack.model_deployment(MODEL, strategy=CANARY))
            self.recorder = Recorder(self.stack)
            self.recorder.start()
            self.follow("version 1 to serve", lambda st: st.get("stableVersion") == 1 and st.get("phase") == "Stable")
            self.recorder.mark("v1 serving")
        with self.stage(f"send traffic ({RATE:.0f} requests/s to {HOST} through the gateway, loopback only)"):
            load = self.load = LoadGenerator(
                self.stack.gateway_url, HOST, MODEL, CUSTOMERS, rate=RATE, max_seconds=2400
            )
            load.start()
            self.wait("answers through the gateway", lambda: load.snapshot()[200] or None, 60)
        with self.stage("train version 2 (TrainingRun churn-2: more epochs)"):
            self.train(2, must_beat_serving=False)  # the demo must not hang on a lucky draw
            self.recorder.mark("v2 registered")
        with self.stage("roll out version 2: canary 25% -> 50% -> 100%, analysed every 5s"):
            self.roll_out(2, expect="Promoted")
        with self.stage("roll back version 3: version 2's model failing half its calls, registered by hand"):
            self.register_faulty(3, source=2)
            self.recorder.mark("v3 registered")
            status = self.roll_out(3, expect="RolledBack")
            self.console.line(f"why: {status.get('reason')}: {status.get('message')}")
            deadline = time.monotonic() + AFTERMATH
            while time.monotonic() < deadline:
                self.console.progress(f"recording the aftermath {bar(1 - (deadline - time.monotonic()) / AFTERMATH)}")
                time.sleep(0.5)
        if self.closed_loop:
            demo_loop.ClosedLoop(self).play()

    def finish(self, kept: bool) -> list[str]:
        status = _status(self.need_api())
        self.stop_traffic()
        mvs = _list(self.need_api(), MODEL_VERSIONS)
        requests = dict(self.load.snapshot()) if self.load else {}
        dirs = [self.stack.plane.assets.kubectl.parent, Path(sys.executable).parent]
        return summary(status, mvs, self.trained, requests, self.files, self.stack.kubeconfig, dirs, kept)

    # -- steps -------------------------------------------------------------------------------------
    def train(self, number: int, must_beat_serving: bool = True) -> None:
        name, hyperparameters = RUNS[number]
        evaluation = {"metric": "auc", "minimum": 0.7, "mustBeatServing": must_beat_serving}
        self.create(
            TRAINING_RUNS, self.stack.training_run(name, hyperparameters=hyperparameters, evaluation=evaluation)
        )
        self.await_version(name, number, int(hyperparameters["epochs"]))

    def await_version(self, name: str, number: int, epochs: int) -> dict[str, Any]:
        """Follows TrainingRun `name` until it registers version `number` (which passed its gates)."""
        started = time.monotonic()

        def registered() -> dict[str, Any] | None:
            status = _get(self.need_api(), TRAINING_RUNS, name).get("status") or {}
            phase = status.get("phase", "Pending")
            if phase == "Failed":
                raise DemoFailed(self.current, f"{name} failed: {status.get('message')}")
            done = epochs_done(self.stack.artifacts / "runs" / name)
            if phase == "Running":
                detail = (
                    f"{bar(done / epochs)} epoch {done}/{epochs}" if done else "Feast point-in-time join, validation"
                )
            else:
                detail = "registering the model" if phase == "Succeeded" else "waiting for Ray"
            self.last_seen = f"{name}: {phase}, {detail}"
            self.console.progress(f"{name}: {phase:<9} {time.monotonic() - started:4.0f}s  {detail}", (phase, done))
            return model_version(self.need_api(), number)

        mv = self.wait(f"{name} to register version {number}", registered, TRAIN_TIMEOUT, interval=1.0)
        self.trained[number] = time.monotonic() - started
        spec_ = mv["spec"]
        gates = spec_.get("gates") or {}
        metrics = " ".join(f"{k}={v}" for k, v in sorted((spec_.get("metrics") or {}).items()))
        self.console.line(f"{name} registered ModelVersion {mv['metadata']['name']}: {metrics}")
        if gates.get("passed") is False:
            raise DemoFailed(self.current, f"version {number} failed its gates: {gates.get('reason')}")
        return mv

    def register_faulty(self, number: int, source: int) -> None:
        original = model_version(self.need_api(), source)
        if original is None:
            raise DemoFailed(self.current, f"version {source} is gone")
        out = self.stack.artifacts / "runs" / f"churn-faulty-{number}"
        command = [sys.executable, "-m", "pipelines.predictor.faults", "--source", run_dir(original), "--out", str(out)]
        made = subprocess.run([*command, *FAULT], cwd=REPO_ROOT, capture_output=True, text=True)
        if made.returncode != 0:
            raise DemoFailed(self.current, f"pipelines.predictor.faults failed: {made.stderr.strip()[-2000:]}")
        # The offline metrics are version 2's: only live analysis can tell this version apart.
        spec = {"model": MODEL, "version": number, "uri": f"file://{out}/", "format": "torchscript"}
        spec["metrics"] = original["spec"].get("metrics") or {}
        body = {"apiVersion": MODEL_VERSIONS.api_version, "kind": MODEL_VERSIONS.kind, "spec": spec}
        self.create(MODEL_VERSIONS, {**body, "metadata": {"name": f"{MODEL}-v{number}", "namespace": NAMESPACE}})
        self.console.line(f"registered ModelVersion {MODEL}-v{number} by hand ({' '.join(FAULT)} on version {source})")

    def roll_out(self, number: int, expect: str) -> dict[str, Any]:
        """Follows version `number`'s canary until its outcome; fails on the other outcome or a skipped step."""
        seen: list[tuple[int, int]] = []

        def over(st: dict[str, Any]) -> bool:
            if st.get("candidateVersion") == number and st.get("stepStartedAt"):
                at = (int(st.get("step") or 0), int(st.get("canaryWeight") or 0))
                if at not in seen:
                    seen.append(at)
                    self.need_recorder().mark(f"v{number} at {at[1]}%")
            outcome = outcomes(st).get(number)
            if outcome is not None and outcome != expect:
                raise DemoFailed(self.current, f"version {number} was {outcome}: {st.get('message')}")
            return outcome == expect and st.get("candidateVersion") is None

        status = self.follow(f"version {number} to be {expect}", over, ROLLOUT_TIMEOUT)
        self.need_recorder().mark(f"v{number} {'promoted' if expect == 'Promoted' else 'rolled back'}")
        every = [(i, int(cast(int, s["weight"]))) for i, s in enumerate(STEPS)]
        if expect == "Promoted" and seen != every:
            raise DemoFailed(self.current, f"version {number} was promoted, but through steps {seen}, not {every}")
        if self.render:
            self.console.line("kubectl slipway -n ml status churn:")
            self.console.raw("\n".join("    " + line for line in self.render(_md(self.need_api())).splitlines()))
        return status

    # -- helpers -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.current, started = name, time.monotonic()
        self.console.line(f"== {name}")
        try:
            yield
        except (DemoFailed, KeyboardInterrupt):
            raise
        except Exception as error:  # an API error, a component that would not start: this step failed
            raise DemoFailed(name, f"{type(error).__name__}: {error}") from error
        self.console.line(f"   done in {time.monotonic() - started:.0f}s")

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
        deadline = time.monotonic() + timeout
        while True:
            if (problem := self.stack.dead()) is not None:
                raise DemoFailed(self.current, problem)
            value = probe()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise DemoFailed(
                    self.current, f"{what} did not happen within {timeout:.0f}s; last seen: {self.last_seen}"
                )
            time.sleep(interval)

    def follow(
        self, what: str, done: Callable[[dict[str, Any]], bool], timeout: float = SERVE_TIMEOUT
    ) -> dict[str, Any]:
        """Waits on the ModelDeployment, printing a line whenever its rollout changes."""
        last: list[tuple[object, ...]] = [()]
        started = time.monotonic()

        def probe() -> dict[str, Any] | None:
            status = _status(self.need_api())
            self.last_seen = describe(status)
            if change_key(status) != last[0]:
                last[0] = change_key(status)
                self.console.line(self.last_seen)
            elif self.console.tty:
                self.console.progress(f"waiting for {what} ({time.monotonic() - started:.0f}s)")
            return status if done(status) else None

        return self.wait(what, probe, timeout)

    def create(self, kind: Resource, body: dict[str, Any]) -> None:
        self.need_api().create_namespaced_custom_object(kind.group, kind.version, NAMESPACE, kind.plural, body)

    @property
    def stack(self) -> DevStack:
        if self._stack is None:
            raise DemoFailed(self.current, "the dev stack is not up")
        return self._stack

    def need_api(self) -> client.CustomObjectsApi:
        if self.api is None:
            raise DemoFailed(self.current, "the control plane is not up")
        return self.api

    def need_recorder(self) -> Recorder:
        if self.recorder is None:
            raise DemoFailed(self.current, "the timeline is not recording")
        return self.recorder

    def stop_traffic(self) -> None:
        """Stops the load and the recorder, and writes the timeline from what was recorded."""
        if self.load:
            self.load.stop()
        if self.recorder and not self.files:
            self.recorder.stop()
            title = f"{MODEL}: rollout timeline ({time.strftime('%Y-%m-%d %H:%M')})"
            self.files = timeline.write(self.folder, self.recorder.samples, self.recorder.events, title)

    def close(self) -> None:
        try:
            self.stop_traffic()
        except Exception as error:  # the picture is a nicety; stopping everything is not
            self.console.line(f"could not write the timeline: {type(error).__name__}: {error}")
        finally:
            if self._stack:
                self._stack.stop()
        for pid in leftovers(str(self.folder)):  # none of the demo's processes may outlive it
            self.console.line(f"stopping a leftover process {pid}: {_cmdline(pid)[:120]}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def children_output(log: Path) -> Iterator[None]:
    """Processes started meanwhile write to `log` (they inherit fds 1 and 2); the console has its own fd.

    The dev stack's start runs the Feast tools in the foreground; their chatter would tear the
    progress line. Long-lived components have their own logs already.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as target:
        os.dup2(target.fileno(), 1)
        os.dup2(target.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def epochs_done(run: Path) -> int:
    """Epochs trained so far: the newest `meta.json` Ray Train's checkpoints carry under the run."""
    done = 0
    for meta in (run / "checkpoints").rglob("meta.json"):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            done = max(done, int(json.loads(meta.read_text())["epoch"]) + 1)
    return done


def model_version(api: client.CustomObjectsApi, number: int) -> dict[str, Any] | None:
    found = (i for i in _list(api, MODEL_VERSIONS) if i["spec"]["model"] == MODEL and i["spec"]["version"] == number)
    return next(found, None)


def run_dir(mv: Mapping[str, Any]) -> str:
    return str(mv["spec"]["uri"]).removeprefix("file://")


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def leftovers(marker: str) -> list[int]:
    """The demo's own processes: every process it starts inherits `MARKER_ENV=marker`, also those
    that leave its process tree (a component's orphaned child); a user's `slipway dev down` in
    another shell does not."""
    return marked(MARKER_ENV, marker)


def running(pid_file: Path) -> int | None:
    """The pid in `pid_file` when that process is alive."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def prepare(workdir: Path) -> tuple[Path | None, str]:
    """The demo's folder, emptied for a new run; or None and why not."""
    folder = workdir / DEMO_DIR
    if (pid := running(workdir / PID_FILE)) is not None:
        return (
            None,
            f"a dev stack is already running in {workdir} (pid {pid}); stop it: slipway dev down --workdir {workdir}",
        )
    if (pid := running(folder / PID_FILE)) is not None:
        return None, f"a demo is already running in {folder} (pid {pid}); stop it: slipway dev down --workdir {folder}"
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).exists():
        return None, f"{folder} exists and is not a demo's folder; move it away or pick another --workdir"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by `slipway demo`; the next demo empties this folder\n")
    return folder, ""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _hold_on(signum: int, frame: FrameType | None) -> None:
    print("\nstill stopping everything the demo started; a moment ...", flush=True)


def run(workdir: Path, keep: bool | None = None, render: Render | None = None, closed_loop: bool = False) -> int:
    """The demo (with `closed_loop`, its closed-loop chapter too); 0 when every step had its expected outcome."""
    workdir = workdir.resolve()
    folder, problem = prepare(workdir)
    if folder is None:
        print(problem, file=sys.stderr)
        return 1
    (folder / PID_FILE).write_text(str(os.getpid()))  # `slipway dev down --workdir <folder>` stops it
    os.environ[MARKER_ENV] = str(folder)
    keep = sys.stdin.isatty() if keep is None else keep
    console = Console(os.fdopen(os.dup(sys.stdout.fileno()), "w"))  # see children_output
    demo = Demo(folder, console, render, closed_loop)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    code, finished = 1, False
    try:
        demo.play()
        report = demo.finish(kept=keep)
        finished, code = True, 0
        console.line("== summary")
        console.raw("\n".join(report))
        if keep:
            while (dead := demo.stack.dead()) is None:
                time.sleep(1)
            console.line(dead)
    except DemoFailed as failure:
        console.line(f"FAILED at step '{failure.step}': {failure.message}")
        console.line(f"logs: {folder}/*.log")
    except KeyboardInterrupt:
        code = 0 if finished else 130
        console.line("stopping (interrupted)" if not finished else "stopping")
    finally:
        for sig in previous:
            signal.signal(sig, _hold_on)  # a second Ctrl-C must not cut the clean-up short
        try:
            demo.close()
            if demo.files and code != 0:
                console.line("timeline so far: " + "  ".join(str(p) for p in demo.files))
            console.line("everything the demo started is stopped")
        finally:
            (folder / PID_FILE).unlink(missing_ok=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code
