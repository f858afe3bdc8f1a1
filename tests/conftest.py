"""Shared fixtures: a real etcd + kube-apiserver, the CRDs, and the operator as a process."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from slipway.controlplane import ControlPlane
from slipway.devstack.cluster import install_crds
from tests.support import OPERATOR_USER, Cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("controlplane")
    # The operator runs as the chart's ServiceAccount with the chart's RBAC: a rule it lacks fails
    # the tests that need it (test_rbac.py also fails on rules it never uses).
    with ControlPlane(workdir / "plane", users=[OPERATOR_USER]) as plane:
        install_crds(plane.assets.kubectl, plane.kubeconfig, workdir)
        cluster = Cluster(plane, workdir)
        cluster.grant_operator_chart_rbac()
        yield cluster


@pytest.fixture(scope="session")
def operator(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with the operator running (restarted by tests that kill it)."""
    cluster.start_operator()
    yield cluster
    if cluster.operator:
        cluster.operator.stop()
    if os.environ.get("SLIPWAY_SHOW_OPERATOR_LOG"):
        print(cluster.operator_log())


_namespaces = itertools.count()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test, so tests never see each other's objects."""
    name = f"t{next(_namespaces)}-{request.node.name.lower()}"[:50].strip("-_[]").replace("_", "-")
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    cluster.core.create_namespace({"metadata": {"name": name}})
    return name
