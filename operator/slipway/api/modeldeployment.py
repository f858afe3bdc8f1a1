"""ModelDeployment: serves a ModelVersion through KServe with a Direct, Canary or BlueGreen rollout."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import (
    SECRET_NAME,
    ApiModel,
    Condition,
    StatusModel,
    cel,
    conditions_field,
    dns_label_rule,
    duration_rule,
    rule,
    rules,
    uri_rule,
    version_rule,
)

DeploymentPhase = Literal["Pending", "Stable", "Progressing", "Paused", "RollingBack", "Degraded", "Failed"]
StrategyType = Literal["Canary", "BlueGreen", "Direct"]
AnalysisMetricName = Literal[
    "error-rate", "latency-p95", "latency-p99", "prediction-mean-shift", "feature-drift", "custom"
]
PredictorEngine = Literal["kserve", "ray-serve"]

# A recorded spec.predictor in status: kept as written, read leniently (see predictor_of in reconcile).
PRESERVED: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}

RESOURCE_NAMES = ("cpu", "memory", "nvidia.com/gpu", "ephemeral-storage")


def _resource_map(field: str) -> dict[str, Any]:
    allowed = ", ".join(RESOURCE_NAMES)
    return rules(
        rule(
            "self.all(k, k in " + str(list(RESOURCE_NAMES)).replace('"', "'") + ")",
            f"{field} keys must be among {allowed}",
        ),
        rule("self.all(k, isQuantity(self[k]))", f"{field} values must be Kubernetes quantities such as 500m or 2Gi"),
    )


class Resources(ApiModel):
    requests: dict[str, str] = Field(
        default_factory=dict,
        description="Resource requests (cpu, memory, nvidia.com/gpu) as quantities.",
        max_length=4,
        json_schema_extra=_resource_map("spec.predictor.resources.requests"),
    )
    limits: dict[str, str] = Field(
        default_factory=dict,
        description="Resource limits (cpu, memory, nvidia.com/gpu) as quantities.",
        max_length=4,
        json_schema_extra=_resource_map("spec.predictor.resources.limits"),
    )


class OnlineFeatures(ApiModel):
    feature_service: str = Field(
        description="Feast feature service read from the online store.", min_length=1, max_length=128
    )
    entity_key: str = Field(
        description="Request field holding the entity key (e.g. customer_id).", min_length=1, max_length=128
    )


class RayServeAutoscaling(ApiModel):
    model_config = cel(
        rule(
            "self.minReplicas <= self.maxReplicas",
            "spec.predictor.rayServe.autoscaling.minReplicas must be less than or equal to "
            "spec.predictor.rayServe.autoscaling.maxReplicas",
            ".minReplicas",
        )
    )

    min_replicas: int = Field(1, ge=1, le=128, description="Fewest Ray Serve replicas in each predictor pod.")
    max_replicas: int = Field(
        ge=1, le=128, description="Most Ray Serve replicas in each predictor pod; at least minReplicas."
    )


class RayServe(ApiModel):
    """How the ray-serve engine runs the model inside each predictor pod."""

    replicas: int = Field(
        2, ge=1, le=128, description="Ray Serve replicas of the model in each predictor pod (without autoscaling)."
    )
    autoscaling: RayServeAutoscaling | None = Field(
        None, description="Let Ray Serve scale its replicas with load between minReplicas and maxReplicas."
    )
    # A millicore at least: the finest CPU Kubernetes can grant (Ray's own floor is 0.0001). Above 1,
    # whole CPUs: the predictor refuses fractions there (pipelines.predictor.settings), so the schema
    # does too, rather than let a pod crash-loop on a spec the API server took.
    cpus_per_replica: float = Field(
        1,
        ge=0.001,
        le=64,
        description="CPUs each replica reserves in Ray (fractions allowed up to 1, at least 0.001; whole above 1).",
        json_schema_extra=rules(
            rule(
                "self <= 1.0 || self == double(int(self))",
                "spec.predictor.rayServe.cpusPerReplica must be a whole number when above 1",
            )
        ),
    )
    gpus_per_replica: int = Field(0, ge=0, le=8, description="GPUs (nvidia.com/gpu) each replica reserves in Ray.")

    @property
    def most_replicas(self) -> int:
        """What the pod must have room for."""
        return self.autoscaling.max_replicas if self.autoscaling else self.replicas


class Batching(ApiModel):
    """Server-side batching: requests arriving together are scored as one batch."""

    max_batch_size: int = Field(64, ge=1, le=4096, description="Most instances scored in one batch.")
    max_wait_ms: float = Field(
        2, ge=0, le=10000, description="Longest a request waits for others to fill its batch (milliseconds)."
    )


class Predictor(ApiModel):
    model_config = cel(
        rule(
            "self.minReplicas <= self.maxReplicas",
            "spec.predictor.minReplicas must be less than or equal to spec.predictor.maxReplicas",
            ".minReplicas",
        )
    )

    image: str | None = Field(
        None,
        description="Predictor container image (a KServe model server); unset: the operator's default "
        "(chart value images.predictor).",
        min_length=1,
        max_length=512,
    )
    min_replicas: int = Field(1, ge=0, le=1000, description="Fewest replicas (0 allows scale to zero).")
    max_replicas: int = Field(1, ge=1, le=1000, description="Most replicas; at least minReplicas.")
    resources: Resources = Field(default_factory=Resources, description="Container resources.")
    features: OnlineFeatures | None = Field(None, description="Enrich requests with Feast online features.")
    credentials_secret: str | None = Field(
        None,
        description="A Secret in the deployment's namespace whose keys become environment variables of the "
        "model server, e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL to read an s3:// "
        "version. Credentials are only ever referenced, never written in a spec.",
        max_length=253,
        pattern=SECRET_NAME,
    )
    service_account_name: str | None = Field(
        None,
        description="ServiceAccount of the model server pods; KServe's storage initializer reads object-store "
        "credentials from the Secrets it references.",
        max_length=253,
        pattern=SECRET_NAME,
    )
    engine: PredictorEngine = Field(
        "kserve",
        description="kserve: one model-server process scores every request; ray-serve: the KServe front "
        "hands batches to Ray Serve replicas of the model in the same pod.",
    )
    ray_serve: RayServe | None = Field(
        None, description="Ray Serve settings, used when engine is ray-serve (allowed, and ignored, otherwise)."
    )
    batching: Batching = Field(default_factory=Batching, description="Server-side batching (both engines).")

    @property
    def ray_serve_settings(self) -> RayServe:
        """rayServe as given, or its defaults."""
        return self.ray_serve or RayServe()


TrafficMode = Literal["gateway", "kserve"]
DEFAULT_TRAFFIC: TrafficMode = "gateway"
DEFAULT_PROMETHEUS_URL = "http://prometheus.monitoring:9090"


class Prometheus(ApiModel):
    url: str = Field(
        description="Prometheus base URL (http:// or https://) the analysis queries.",
        max_length=2048,
        json_schema_extra=uri_rule("spec.prometheus.url", ("http", "https")),
    )


class CanaryStep(ApiModel):
    weight: int = Field(ge=1, le=100, description="Candidate traffic percent at this step (1..100).")
    pause: str = Field(
        "0s",
        description="How long to hold this step before analysis (e.g. 60s).",
        max_length=32,
        json_schema_extra=duration_rule("pause"),
    )


class AnalysisMetric(ApiModel):
    model_config = cel(
        rule("self.name != 'custom' || has(self.query)", "a custom analysis metric needs a query", ".query"),
        rule("self.name == 'custom' || !has(self.query)", "only a custom analysis metric takes a query", ".query"),
        rule("has(self.min) || has(self.max)", "an analysis metric needs a min or a max threshold"),
    )

    name: AnalysisMetricName = Field(
        description=(
            "error-rate, latency-p95, latency-p99 (seconds), prediction-mean-shift, feature-drift (the largest "
            "per-feature PSI of the candidate's inputs against its training data; use with max) or custom (PromQL)."
        )
    )
    query: str | None = Field(
        None,
        description="PromQL for custom; {{candidate}}, {{stable}} and {{namespace}} are substituted.",
        min_length=1,
        max_length=4096,
    )
    min: float | None = Field(None, description="Fail when the value is below this.")
    max: float | None = Field(None, description="Fail when the value is above this.")


class Analysis(ApiModel):
    interval: str = Field(
        "30s", description="Time between measurements.", max_length=32, json_schema_extra=duration_rule("interval")
    )
    failure_limit: int = Field(1, ge=0, le=100, description="Failed measurements tolerated before rolling back.")
    metrics: list[AnalysisMetric] = Field(
        default_factory=list, description="Metrics that must hold for the rollout to advance.", max_length=16
    )


class Shadow(ApiModel):
    """A stage before any user sees the candidate: it gets a mirrored copy of live requests, and its
    answers are thrown away, while analysis judges it on its own series as usual."""

    percent: int = Field(100, ge=1, le=100, description="Percent of live requests mirrored to the candidate (1..100).")
    duration: str = Field(
        "60s",
        description="How long the shadow stage lasts at least; with metrics, it also needs a passing "
        "measurement whose window lies inside it.",
        max_length=32,
        json_schema_extra=duration_rule("shadow.duration"),
    )


class Canary(ApiModel):
    steps: list[CanaryStep] = Field(
        description="Weighted steps; weights strictly increasing in 1..100.",
        min_length=1,
        max_length=20,
        json_schema_extra=rules(
            rule(
                "self.map(s, s.weight).isSorted() && self.all(a, self.exists_one(b, b.weight == a.weight))",
                "spec.strategy.canary.steps: weights must be strictly increasing",
            )
        ),
    )
    analysis: Analysis = Field(default_factory=Analysis, description="Analysis run before each step advances.")
    shadow: Shadow | None = Field(
        None,
        description="A shadow stage before the first step: the candidate gets no user traffic and a mirror of "
        "shadow.percent of it, whose answers are discarded. Needs traffic: gateway.",
    )


class BlueGreen(ApiModel):
    preview_weight: int = Field(0, ge=0, le=100, description="Traffic percent sent to the candidate before the switch.")
    auto_promote: bool = Field(True, description="Switch by itself once analysis passes.")
    scale_down_delay: str = Field(
        "300s",
        description="How long the old version stays warm after the switch, for an instant switch back.",
        max_length=32,
        json_schema_extra=duration_rule("scaleDownDelay"),
    )
    analysis: Analysis = Field(default_factory=Analysis, description="Analysis run before the switch.")
    shadow: Shadow | None = Field(
        None,
        description="A shadow stage before the preview (or, with previewWeight 0, instead of it): the candidate "
        "gets no user traffic and a mirror of shadow.percent of it, whose answers are discarded. Needs "
        "traffic: gateway.",
    )


class Strategy(ApiModel):
    model_config = cel(
        rule(
            "self.type != 'Canary' || has(self.canary)",
            "spec.strategy.canary is required when type is Canary",
            ".canary",
        )
    )

    type: StrategyType = Field("Direct", description="Canary, BlueGreen or Direct.")
    progress_deadline: str = Field(
        "600s",
        description="How long a new version may take to become ready before its rollout is ended.",
        max_length=32,
        json_schema_extra=duration_rule("progressDeadline"),
    )
    canary: Canary | None = Field(None, description="Canary steps and analysis.")
    blue_green: BlueGreen = Field(default_factory=BlueGreen, description="Blue-green settings.")


def _no_shadow_with_kserve(strategy: str) -> dict[str, str]:
    """KServe's canaryTrafficPercent has no mirroring: a shadow stage needs the Gateway API's."""
    return rule(
        "!has(self.traffic) || self.traffic != 'kserve' || !has(self.strategy) "
        f"|| !has(self.strategy.{strategy}) "
        f"|| !has(self.strategy.{strategy}.shadow)",
        f"spec.strategy.{strategy}.shadow is not supported with traffic: kserve (KServe cannot mirror "
        "requests); use traffic: gateway",
        f".strategy.{strategy}.shadow",
    )


class ModelDeploymentSpec(ApiModel):
    """Which model to serve, on which predictor, and how a new version of it is rolled out."""

    model_config = cel(_no_shadow_with_kserve("canary"), _no_shadow_with_kserve("blueGreen"))

    model: str = Field(
        description="Model name (a DNS-1123 label) whose ModelVersions are served.",
        max_length=63,
        json_schema_extra=dns_label_rule("spec.model"),
    )
    version: int | str = Field(
        "latest",
        description="A version number, or 'latest' (the newest version that passed its gates).",
        json_schema_extra=version_rule(),
    )
    predictor: Predictor = Field(description="The model server.")
    traffic: TrafficMode | None = Field(
        None,
        description="gateway: one InferenceService per version (KServe Standard mode, no Knative) behind a "
        "Gateway API HTTPRoute that splits by weight. kserve: one InferenceService in KServe's Knative "
        "(Serverless) mode split by canaryTrafficPercent; it needs Knative Serving, since KServe's Standard "
        "(RawDeployment) mode has no canary split. "
        "Unset: the operator's default (chart value traffic.backend, gateway unless changed).",
    )
    prometheus: Prometheus | None = Field(
        None,
        description="Where analysis metrics are read; unset: the operator's default (chart value prometheus.url).",
    )
    strategy: Strategy = Field(default_factory=Strategy, description="How a new version is rolled out.")

    @property
    def traffic_mode(self) -> TrafficMode:
        """spec.traffic, or gateway where unset (the operator fills in its own default first)."""
        return self.traffic or DEFAULT_TRAFFIC


class AnalysisResult(StatusModel):
    metric: str = Field("", description="Analysis metric name.")
    value: float | None = Field(None, description="Measured value; empty when inconclusive.")
    verdict: Literal["Passed", "Failed", "Inconclusive"] = Field(
        "Inconclusive", description="Passed, Failed or Inconclusive."
    )
    message: str = Field("", description="Detail, e.g. why it was inconclusive.")
    time: str | None = Field(None, description="When it was measured (RFC 3339).")


class HistoryEntry(StatusModel):
    version: int = Field(description="The version.")
    outcome: str = Field(description="Promoted, RolledBack, Superseded or Cancelled.")
    time: str | None = Field(None, description="When (RFC 3339).")
    reason: str = Field("", description="Why.")


class ModelDeploymentStatus(StatusModel):
    """The rollout's whole state: an operator restart or a new leader resumes from it exactly."""

    phase: DeploymentPhase = Field(
        "Pending", description="Pending, Stable, Progressing, Paused, RollingBack, Degraded or Failed."
    )
    reason: str = Field("", description="Why the deployment is in its phase (a condition reason).")
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] = conditions_field()
    stable_version: int | None = Field(None, description="The version serving (most) traffic.")
    candidate_version: int | None = Field(None, description="The version being rolled out.")
    canary_weight: int = Field(0, description="Traffic percent on the candidate.")
    shadow_percent: int | None = Field(
        None,
        description="Set during the candidate's shadow stage: the percent of requests mirrored to it (0 until "
        "it is ready); its answers are discarded.",
    )
    step: int | None = Field(None, description="Current canary step (from 0).")
    url: str = Field("", description="The endpoint URL.")
    analysis: list[AnalysisResult] = Field(default_factory=list, description="The last analysis results.")
    analysis_failures: int = Field(0, description="Failed measurements in this rollout.")
    analysis_inconclusive: int = Field(0, description="Inconclusive measurements in this rollout (not failures).")
    rollout_started_at: str | None = Field(None, description="When the candidate's rollout began (RFC 3339).")
    step_started_at: str | None = Field(None, description="When the current weight took effect (RFC 3339).")
    last_analysis_at: str | None = Field(None, description="When the last measurement was taken (RFC 3339).")
    previous_version: int | None = Field(None, description="The former stable version, kept warm after a switch.")
    stable_predictor: dict[str, Any] | None = Field(
        None,
        description="spec.predictor as the stable version serves it (all but the replica counts, which follow "
        "the spec): recorded when a version is promoted, and kept while a rollout is under way so that "
        "the stable version is not restarted with the candidate's settings.",
        json_schema_extra=PRESERVED,
    )
    previous_predictor: dict[str, Any] | None = Field(
        None,
        description="stablePredictor of the former stable version, while it is kept warm.",
        json_schema_extra=PRESERVED,
    )
    stable_revision: str | None = Field(
        None,
        description="traffic: kserve: the Knative revision serving the stable version, so that a revision "
        "of the candidate is told apart from it (KServe reports no version per revision).",
    )
    scale_down_at: str | None = Field(None, description="When the former stable version is removed (RFC 3339).")
    rolled_back_version: int | None = Field(
        None, description="A rolled-back version, kept for inspection and not retried until the spec changes."
    )
    rolled_back_generation: int | None = Field(None, description="The .metadata.generation it was rolled back at.")
    handled_requests: dict[str, str] = Field(
        default_factory=dict, description="The last promote/abort/retry request handled, by verb."
    )
    history: list[HistoryEntry] = Field(default_factory=list, description="Past rollouts, newest last.")
    message: str = Field("", description="Human-readable summary of the current state.")
