"""kind tests: the dev stack's scenarios on the kind cluster of hack/kind-up.sh.

Every test here is skipped, with the reason (`pytest tests/kind -rs`), where Docker, kind,
kubectl or the cluster are missing. Where the cluster exists but kind-up.sh did not finish, the
tests fail and say what is missing. Each test works in a namespace of its own (labelled
slipway.dev/kind-test=true); a failed test's namespace is kept for inspection, the others are
deleted. The two versions the serving scenarios roll out are trained once per session, for real,
by TrainingRuns in a namespace of their own.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.kind.cluster import CONTEXT, Kind, Trained, training_run, why_not_runnable
from tests.support import wait_for

HERE = Path(__file__).resolve().parent
FAILED = pytest.StashKey[bool]()
TRAIN_TIMEOUT = 1500  # seconds: a Ray cluster starts, trains two workers for a few epochs, evaluates


@functools.cache
def skip_reason() -> str | None:
    return why_not_runnable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test of this directory `kind`, and skips them all, visibly, when they cannot run."""
    mine = [item for item in items if HERE in item.path.parents]
    if not mine:
        return
    reason = skip_reason()
    for item in mine:
        item.add_marker(pytest.mark.kind)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Remembers a failure, so the test's namespace is kept."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(scope="session")
def kind(tmp_path_factory: pytest.TempPathFactory) -> Kind:
    """The cluster, once everything kind-up.sh installs is there and ready."""
    cluster = Kind(tmp_path_factory.mktemp("kind"))
    problems = cluster.problems()
    if problems:
        pytest.fail(f"kind cluster {CONTEXT} is not ready for the tests (run hack/kind-up.sh): " + "; ".join(problems))
    return cluster


def unique_namespace(label: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40].strip("-")
    return f"k-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(kind: Kind, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; kept when the test failed."""
    name = unique_namespace(request.node.name.removeprefix("test_"))
    kind.create_namespace(name)
    yield name
    if request.node.stash.get(FAILED, False):
        print(f"\nkept the failed test's namespace: kubectl --context {CONTEXT} -n {name} get all,tr,mv,md,isvc")
    else:
        kind.delete_namespace(name)


@pytest.fixture(scope="session")
def training_namespace(kind: Kind, request: pytest.FixtureRequest) -> Iterator[str]:
    name = unique_namespace("training")
    kind.create_namespace(name)
    yield name
    if request.session.testsfailed:
        print(f"\nkept the training namespace: kubectl --context {CONTEXT} -n {name} get tr,rayjobs,mv")
    else:
        kind.delete_namespace(name)


def train(kind: Kind, namespace: str, name: str, **spec: Any) -> Trained:
    """Applies a TrainingRun and waits until it has registered its ModelVersion (fails if it fails)."""
    kind.apply(training_run(name, namespace, **spec))

    def registered() -> Trained | None:
        run = kind.get(namespace, "trainingruns", name)
        status = run.get("status") or {}
        if status.get("phase") == "Failed":
            raise AssertionError(f"TrainingRun {namespace}/{name} failed: {status.get('message')!r}; {status}")
        if status.get("phase") != "Succeeded" or not status.get("modelVersion"):
            return None
        try:
            version = kind.get(namespace, "modelversions", status["modelVersion"])
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return Trained(namespace, run, version)

    return wait_for(registered, timeout=TRAIN_TIMEOUT, interval=5, what=f"TrainingRun {namespace}/{name} to register")


@pytest.fixture(scope="session")
def first_version(kind: Kind, training_namespace: str) -> Trained:
    """churn-v1, trained for real on KubeRay."""
    return train(kind, training_namespace, "churn-1")


@pytest.fixture(scope="session")
def second_version(kind: Kind, training_namespace: str, first_version: Trained) -> Trained:
    """churn-v2: the same data, other hyperparameters; trained after churn-v1 (one Ray cluster at a time)."""
    return train(
        kind, training_namespace, "churn-2", hyperparameters={"epochs": "6", "batchSize": "256", "learningRate": "0.01"}
    )
