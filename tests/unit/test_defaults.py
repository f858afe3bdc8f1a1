"""The operator's defaults (chart values) fill in only what a resource leaves unset."""

from __future__ import annotations

import copy

import pytest

from slipway.api.defaults import MissingField, OperatorDefaults, UnsupportedField
from slipway.api.modeldeployment import ModelDeploymentSpec
from slipway.api.trainingrun import TrainingRunSpec
from tests.support import contract_manifests

TR, _, MD = contract_manifests()
PLATFORM = {
    "SLIPWAY_TRAINER_IMAGE": "registry.local/trainer:1",
    "SLIPWAY_PREDICTOR_IMAGE": "registry.local/predictor:1",
    "SLIPWAY_PROMETHEUS_URL": "http://prometheus.obs:9090",
    "SLIPWAY_TRAFFIC": "kserve",
}


def without(manifest: dict[str, object], *path: str) -> dict[str, object]:
    spec = copy.deepcopy(manifest["spec"])
    assert isinstance(spec, dict)
    node = spec
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1], None)
    return spec


def test_unset_fields_take_the_platform_defaults() -> None:
    defaults = OperatorDefaults.from_env(PLATFORM)
    run = defaults.run(TrainingRunSpec.model_validate(without(TR, "image")))
    assert run.image == "registry.local/trainer:1"
    spec = without(MD, "predictor", "image")
    spec.pop("traffic", None)
    spec.pop("prometheus", None)
    deployment = defaults.deployment(ModelDeploymentSpec.model_validate(spec))
    assert deployment.predictor.image == "registry.local/predictor:1"
    assert deployment.traffic == "kserve" and deployment.traffic_mode == "kserve"
    assert deployment.prometheus is not None and deployment.prometheus.url == "http://prometheus.obs:9090"


def test_what_a_resource_sets_wins() -> None:
    defaults = OperatorDefaults.from_env(PLATFORM)
    assert defaults.run(TrainingRunSpec.model_validate(TR["spec"])).image == TR["spec"]["image"]
    spec = copy.deepcopy(MD["spec"])
    spec.update(traffic="gateway", prometheus={"url": "http://mine:9090"})
    deployment = defaults.deployment(ModelDeploymentSpec.model_validate(spec))
    assert deployment.predictor.image == MD["spec"]["predictor"]["image"]
    assert deployment.traffic == "gateway"
    assert deployment.prometheus is not None and deployment.prometheus.url == "http://mine:9090"


def test_without_platform_values_traffic_is_gateway_and_prometheus_the_monitoring_namespace() -> None:
    spec = copy.deepcopy(MD["spec"])
    spec.pop("traffic", None)
    spec.pop("prometheus", None)
    deployment = OperatorDefaults.from_env({}).deployment(ModelDeploymentSpec.model_validate(spec))
    assert deployment.traffic == "gateway"
    assert deployment.prometheus is not None and deployment.prometheus.url == "http://prometheus.monitoring:9090"


@pytest.mark.parametrize("strategy", ["canary", "blueGreen"])
def test_a_shadow_stage_under_the_kserve_default_is_refused_naming_the_field(strategy: str) -> None:
    """Admission refuses shadow with traffic: kserve; with spec.traffic unset only the operator can."""
    spec = copy.deepcopy(MD["spec"])
    spec.pop("traffic", None)
    spec["strategy"].setdefault(strategy, {}).update(shadow={"percent": 50})
    if strategy == "blueGreen":
        spec["strategy"]["canary"].pop("shadow", None)
    with pytest.raises(UnsupportedField, match=rf"spec\.strategy\.{strategy}\.shadow .*kserve"):
        OperatorDefaults.from_env(PLATFORM).deployment(ModelDeploymentSpec.model_validate(spec))
    assert issubclass(UnsupportedField, MissingField)  # the handler reports it as an invalid spec
    deployment = OperatorDefaults.from_env({}).deployment(ModelDeploymentSpec.model_validate(spec))
    assert deployment.traffic == "gateway"


def test_an_image_with_no_default_is_an_error_naming_the_field_and_the_value() -> None:
    with pytest.raises(MissingField, match=r"spec\.image .*images\.trainer"):
        OperatorDefaults.from_env({}).run(TrainingRunSpec.model_validate(without(TR, "image")))
    with pytest.raises(MissingField, match=r"spec\.predictor\.image .*images\.predictor"):
        OperatorDefaults.from_env({}).deployment(ModelDeploymentSpec.model_validate(without(MD, "predictor", "image")))


@pytest.mark.parametrize(
    ("variable", "value"), [("SLIPWAY_TRAFFIC", "istio"), ("SLIPWAY_PROMETHEUS_URL", "prometheus:9090")]
)
def test_a_bad_platform_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        OperatorDefaults.from_env({variable: value})
