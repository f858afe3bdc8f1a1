"""Every object the chart renders is valid for a real API server (server-side dry-run).

The control plane has Slipway's CRDs and the upstream third-party CRDs at their pinned versions
(KubeRay, KServe, Gateway API, and the Prometheus Operator's ServiceMonitor for the chart's
optional one; see slipway.controlplane.upstream), so the dry-run checks each manifest against the
schemas and admission the API server applies: what `helm lint` and `helm template` cannot see.
"""

from __future__ import annotations

import pytest
import yaml

from tests.support import CHART, RELEASE_NAMESPACE, REPO, Cluster, contract_manifests, render_chart

EXAMPLES = REPO / "examples"

pytestmark = pytest.mark.integration

VALUE_SETS = [
    (),
    ("serviceMonitor.enabled=true", "grafanaDashboard.enabled=true", "objectStore.credentialsSecret=models-s3"),
    ("watchNamespaces={ml,prod}", "replicas=1", "traffic.backend=kserve", "logLevel=DEBUG"),
    ("serviceAccount.create=false", "serviceAccount.name=platform-operator", "rbac.create=false"),
]


def dry_run(cluster: Cluster, documents: list[dict[str, object]]) -> str:
    result = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-",
        stdin=yaml.safe_dump_all(documents),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def release_namespace(cluster: Cluster) -> str:
    cluster.kubectl("create", "namespace", RELEASE_NAMESPACE)  # may exist already: that is fine
    return RELEASE_NAMESPACE


@pytest.mark.parametrize("values", VALUE_SETS, ids=lambda v: ",".join(v) or "defaults")
def test_every_rendered_object_passes_a_server_side_dry_run(
    cluster: Cluster, release_namespace: str, values: tuple[str, ...]
) -> None:
    documents = list(render_chart(*values))
    assert documents
    output = dry_run(cluster, documents)
    # Each object was sent, and the server answered for each (kind/name ... serverside-applied).
    assert output.count("(server dry run)") == len(documents), output


def test_chart_crds_pass_a_server_side_dry_run(cluster: Cluster) -> None:
    crds = [yaml.safe_load(path.read_text()) for path in sorted((CHART / "crds").glob("*.yaml"))]
    assert {crd["spec"]["names"]["kind"] for crd in crds} >= {"TrainingRun", "ModelVersion", "ModelDeployment"}
    dry_run(cluster, crds)


def test_the_contract_resources_and_examples_pass_a_server_side_dry_run(cluster: Cluster, namespace: str) -> None:
    examples = [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert {doc["kind"] for doc in examples} >= {"TrainingRun", "ModelDeployment"}
    documents = [
        {**doc, "metadata": {**doc["metadata"], "namespace": namespace}} for doc in [*contract_manifests(), *examples]
    ]
    dry_run(cluster, documents)
