"""What the handlers' Kopf indexes hold, and how a handler reads them."""

from __future__ import annotations

import asyncio

import kopf

from slipway.handlers.modeldeployment import served_versions
from slipway.handlers.training_finish import served_version


def test_a_deployment_is_indexed_by_model_only_once_it_has_a_stable_version() -> None:
    spec = kopf.Spec({"spec": {"model": "churn"}})
    serving = kopf.Status({"status": {"stableVersion": 3}})
    assert asyncio.run(served_versions(namespace="risk", spec=spec, status=serving)) == {("risk", "churn"): 3}
    # An empty result drops the deployment's earlier entry (None would keep it).
    assert asyncio.run(served_versions(namespace="risk", spec=spec, status=kopf.Status({}))) == {}


def test_a_run_finds_the_version_its_model_serves() -> None:
    indexes = {"served_versions": {("risk", "churn"): [3, 2]}}
    assert served_version(indexes, "risk", "churn") == 3
    assert served_version(indexes, "risk", "fraud") is None
    assert served_version(indexes, "retail", "churn") is None
