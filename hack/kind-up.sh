#!/usr/bin/env bash
# Brings up a local kind cluster with everything Slipway runs on, then Slipway itself, then the
# example TrainingRun and ModelDeployment (examples/):
#   kind                    kind-config.yaml: one control plane, two workers, the Gateway on
#                           localhost:8080, /tmp/slipway-kind mounted at /slipway-data on every node
#   cert-manager            KServe's webhook certificates
#   kube-prometheus-stack   Prometheus (rollout analysis, the operator's metrics), aliased as
#                           http://prometheus.monitoring:9090, with a PodMonitor for the model servers
#   KubeRay operator        runs the RayJobs that TrainingRuns become
#   Gateway API CRDs        the standard channel, from the Gateway API's own release
#   Envoy Gateway           an implementation of it and the Gateway "slipway-gateway"
#   KServe                  Standard mode (formerly RawDeployment: plain Deployments, no Knative)
#   Redis                   Feast's online store (feature_repo/cluster/feature_store.yaml)
#   shared data             a MutatingAdmissionPolicy that mounts /slipway-data into Slipway's pods
#                           and points them at the cluster Feast configuration
#   images                  operator, trainer and predictor, built with docker, loaded into kind
#   Feast data              the churn data set generated, registered and materialized into Redis
#   helm/slipway            the operator, with the images, Gateway and Prometheus of this cluster
#
# Re-running it is safe: every step is an install-or-upgrade (the Feast data is made again, the
# same bytes). Versions are pinned below and can be overridden from the environment (e.g.
# ENVOY_GATEWAY_VERSION=v1.9.1 hack/kind-up.sh). SKIP_BUILD=1 skips the image builds (the images
# must be in the local Docker image store already); SKIP_EXAMPLES=1 skips applying examples/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-slipway}"
CONTEXT="kind-${CLUSTER}"

KIND_MIN_VERSION="0.32.0" # the oldest kind that runs kind-config.yaml's node image
# KubeRay, KServe and the Gateway API: the versions whose CRDs the tests validate every child
# object against (PINS in operator/slipway/controlplane/upstream.py, fetched from the Go module
# proxy, which serves neither KubeRay 1.7.0 nor KServe v0.21.x); tests/unit/test_upstream_pins.py
# fails when these defaults and those pins differ.
KUBERAY_VERSION="${KUBERAY_VERSION:-1.6.1}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.20.2}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
ENVOY_GATEWAY_VERSION="${ENVOY_GATEWAY_VERSION:-v1.9.0}"
KUBE_PROMETHEUS_STACK_VERSION="${KUBE_PROMETHEUS_STACK_VERSION:-81.6.2}"
REDIS_IMAGE="${REDIS_IMAGE:-redis:7.4.2}"

# The images keep the tag the API contract's manifests name, so they run what was loaded.
IMAGE_TAG="${SLIPWAY_IMAGE_TAG:-0.1.0}"
REGISTRY="${SLIPWAY_IMAGE_REGISTRY:-ghcr.io/example}"
OPERATOR_IMAGE="${REGISTRY}/slipway-operator:${IMAGE_TAG}"
TRAINER_IMAGE="${REGISTRY}/slipway-trainer:${IMAGE_TAG}"
PREDICTOR_IMAGE="${REGISTRY}/slipway-predictor:${IMAGE_TAG}"

SLIPWAY_NAMESPACE=slipway-system
GATEWAY_NAME=slipway-gateway # the chart's traffic.gateway.name default
DOMAIN=example.com           # hosts are <deployment>.<namespace>.example.com
GATEWAY_NODE_PORT=30080      # kind-config.yaml maps it to localhost:8080
PROMETHEUS_URL=http://prometheus.monitoring:9090

# Shared storage (see kind-config.yaml): the host directory every node mounts, and where.
DATA_HOST_DIR=/tmp/slipway-kind
DATA_MOUNT=/slipway-data
SHARED_DATA_LABEL=slipway.dev/shared-data # "true" on any other pod that wants the mount

# Feast: the cluster configuration (feature_repo/cluster/feature_store.yaml) reads these.
FEAST_NAMESPACE=feast
FEAST_DATA="${DATA_MOUNT}/feast"
FEAST_REGISTRY="${FEAST_DATA}/registry.db"
REDIS_ADDRESS="redis.${FEAST_NAMESPACE}.svc.cluster.local:6379"
# The generated data set: the dev stack's (operator/slipway/devstack/stack.py), customers
# 1001..3000 over 180 days from 2025-01-01; its last 61 days are materialized into Redis.
FEAST_CUSTOMERS=2000
FEAST_SEED=7
FEAST_START=2025-01-01
FEAST_DAYS=180
MATERIALIZE_FROM=2025-05-01T00:00:00+00:00
MATERIALIZE_TO=2025-07-01T00:00:00+00:00

log() { printf '\n==> %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not on PATH. $2"
}

# True when version $1 >= $2 (both x.y.z, an optional leading "v").
version_at_least() {
  [[ "$(printf '%s\n%s\n' "${1#v}" "${2#v}" | sort -V | head -n1)" == "${2#v}" ]]
}

# Every call names the kind context, so nothing here ever touches another cluster.
k() { kubectl --context "$CONTEXT" "$@"; }
h() { helm --kube-context "$CONTEXT" "$@"; }

check_tools() {
  need docker "Install Docker (23 or newer, with BuildKit): https://docs.docker.com/engine/install/"
  need kind "Install kind (v${KIND_MIN_VERSION} or newer): https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  need helm "Install Helm (3.8 or newer): https://helm.sh/docs/intro/install/"
  need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
  docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer (is Docker running, and may this user use it?)"
  local kind_version
  kind_version="$(kind version | awk '{print $2}')"
  version_at_least "$kind_version" "$KIND_MIN_VERSION" ||
    die "kind ${kind_version} is too old for kind-config.yaml's node image: install v${KIND_MIN_VERSION} or newer"
}

prepare_data_dir() {
  grep -q "hostPath: ${DATA_HOST_DIR}\$" "$ROOT/kind-config.yaml" ||
    die "kind-config.yaml no longer mounts ${DATA_HOST_DIR}: keep DATA_HOST_DIR in $0 and the config in step"
  log "shared data directory ${DATA_HOST_DIR} (mounted at ${DATA_MOUNT} on every node)"
  mkdir -p "$DATA_HOST_DIR"
  # Pods write as uid 1000 (Ray's image: training, Feast set-up, faulty versions) and read as
  # uid 10001 (operator, model servers); a throwaway local directory, so open to all.
  chmod 0777 "$DATA_HOST_DIR" || die "cannot make ${DATA_HOST_DIR} writable for the cluster's pods (owned by another user?)"
}

create_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "kind cluster ${CLUSTER} exists; reusing it"
    local node
    for node in $(kind get nodes --name "$CLUSTER"); do
      docker exec "$node" test -d "$DATA_MOUNT" ||
        die "node ${node} has no ${DATA_MOUNT}: the cluster was made from an older kind-config.yaml. Delete it (hack/kind-down.sh) and run $0 again"
    done
  else
    log "creating kind cluster ${CLUSTER}"
    kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 180s
  fi
  k cluster-info >/dev/null
}

# The MutatingAdmissionPolicy API version this cluster serves: v1 (Kubernetes >= 1.36, as
# kind-config.yaml's node image) or v1beta1 (1.34 and 1.35, where kind-config.yaml enables it).
admission_policy_api() {
  local version
  for version in v1 v1beta1; do
    if k get --raw "/apis/admissionregistration.k8s.io/${version}" 2>/dev/null | grep -q '"mutatingadmissionpolicies"'; then
      echo "admissionregistration.k8s.io/${version}"
      return
    fi
  done
  die "the cluster serves no MutatingAdmissionPolicy API (Kubernetes < 1.36 without the beta API enabled, see kind-config.yaml). Delete it (hack/kind-down.sh) and run $0 again"
}

namespace() {
  k create namespace "$1" --dry-run=client -o yaml | k apply -f - >/dev/null
}

helm_repos() {
  log "adding Helm repositories"
  helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update >/dev/null
  helm repo add jetstack https://charts.jetstack.io --force-update >/dev/null
  helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
  helm repo update kuberay jetstack prometheus-community >/dev/null
}

install_cert_manager() {
  log "cert-manager ${CERT_MANAGER_VERSION}"
  h upgrade --install cert-manager jetstack/cert-manager --version "$CERT_MANAGER_VERSION" \
    --namespace cert-manager --create-namespace \
    --set crds.enabled=true \
    --wait --timeout 10m
}

# Scrapes every model server: the pods of InferenceServices the operator made carry its
# slipway.dev/deployment label (KServe copies an InferenceService's labels onto its pods), and
# serve /metrics on the predictor port 8080 (an unnamed container port, hence the keep rule).
# Every 5 s, so that a rollout analysis interval of 15 s or more sees a rate.
predictor_podmonitor_manifest() {
  cat <<EOF
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata:
  name: slipway-predictors
  namespace: monitoring
  labels:
    app.kubernetes.io/part-of: slipway
spec:
  namespaceSelector:
    any: true
  selector:
    matchExpressions:
      - key: slipway.dev/deployment
        operator: Exists
  podMetricsEndpoints:
    - path: /metrics
      interval: 5s
      relabelings:
        - sourceLabels: [__meta_kubernetes_pod_container_port_number]
          regex: "8080"
          action: keep
EOF
}

install_prometheus() {
  log "kube-prometheus-stack ${KUBE_PROMETHEUS_STACK_VERSION}"
  # Select every ServiceMonitor/PodMonitor, not only the ones labelled with this release, so the
  # operator's ServiceMonitor and the predictors' PodMonitor are scraped. Grafana and Alertmanager
  # are left out to keep the cluster small.
  h upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
    --version "$KUBE_PROMETHEUS_STACK_VERSION" \
    --namespace monitoring --create-namespace \
    --set grafana.enabled=false \
    --set alertmanager.enabled=false \
    --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
    --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
    --set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false \
    --wait --timeout 10m
  # The API contract's ModelDeployment queries http://prometheus.monitoring:9090.
  k apply -f - <<EOF
apiVersion: v1
kind: Service
metadata:
  name: prometheus
  namespace: monitoring
spec:
  selector:
    app.kubernetes.io/name: prometheus
  ports:
    - name: http
      port: 9090
      targetPort: 9090
EOF
  predictor_podmonitor_manifest | k apply -f -
}

install_kuberay() {
  log "KubeRay operator ${KUBERAY_VERSION}"
  h upgrade --install kuberay-operator kuberay/kuberay-operator --version "$KUBERAY_VERSION" \
    --namespace ray-system --create-namespace \
    --wait --timeout 10m
}

install_gateway() {
  log "Gateway API ${GATEWAY_API_VERSION} CRDs and Envoy Gateway ${ENVOY_GATEWAY_VERSION}"
  # The Gateway API's standard channel from its own release, at the version the tests validate
  # HTTPRoutes against (Envoy Gateway v1.9.0 is built against v1.6.1 and bundles it: the same
  # minor, one patch release older). It brings the safe-upgrades admission policy too; gateway-helm
  # installs with crds.enabled=false below, so it does not bring a second one.
  # Applied server-side because the CRDs are too large for a client-side apply's annotation.
  k apply --server-side --force-conflicts \
    -f "https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/standard-install.yaml" >/dev/null
  # Envoy Gateway's own CRDs (EnvoyProxy and its policies) from its CRD chart, without the Gateway
  # API ones above.
  h template envoy-gateway-crds oci://docker.io/envoyproxy/gateway-crds-helm \
    --version "$ENVOY_GATEWAY_VERSION" \
    --set crds.gatewayAPI.enabled=false \
    --set crds.envoyGateway.enabled=true |
    k apply --server-side --force-conflicts -f - >/dev/null
  h upgrade --install envoy-gateway oci://docker.io/envoyproxy/gateway-helm \
    --version "$ENVOY_GATEWAY_VERSION" \
    --namespace envoy-gateway-system --create-namespace \
    --set crds.enabled=false \
    --wait --timeout 10m
  k wait --for=condition=Available deployment/envoy-gateway -n envoy-gateway-system --timeout=5m

  # kind has no load balancer: the proxy's Service is a NodePort that kind-config.yaml maps to
  # localhost:8080. Slipway's HTTPRoutes attach to the Gateway "slipway-gateway" in slipway-system.
  namespace "$SLIPWAY_NAMESPACE"
  k apply -f - <<EOF
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyProxy
metadata:
  name: kind-nodeport
  namespace: envoy-gateway-system
spec:
  provider:
    type: Kubernetes
    kubernetes:
      envoyService:
        type: NodePort
        patch:
          type: StrategicMerge
          value:
            spec:
              ports:
                - port: 80
                  nodePort: ${GATEWAY_NODE_PORT}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: slipway
spec:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
  parametersRef:
    group: gateway.envoyproxy.io
    kind: EnvoyProxy
    name: kind-nodeport
    namespace: envoy-gateway-system
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ${GATEWAY_NAME}
  namespace: ${SLIPWAY_NAMESPACE}
spec:
  gatewayClassName: slipway
  listeners:
    - name: http
      protocol: HTTP
      port: 80
      allowedRoutes:
        namespaces:
          from: All
EOF
  k wait --for=condition=Programmed "gateway/${GATEWAY_NAME}" -n "$SLIPWAY_NAMESPACE" --timeout=5m
}

# KServe's storage initializer resolves a file:// STORAGE_URI by linking the run directory's
# files into /mnt/models; this gives it the shared directory for file:// URIs (the admission
# policy below mounts it too, this makes it independent of the order the two run in).
storage_container_manifest() {
  cat <<EOF
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterStorageContainer
metadata:
  name: slipway-shared-data
spec:
  container:
    name: storage-initializer
    image: kserve/storage-initializer:${KSERVE_VERSION}
    volumeMounts:
      - name: slipway-data
        mountPath: ${DATA_MOUNT}
        readOnly: true
  supportedUriFormats:
    - prefix: file://
EOF
}

install_kserve() {
  log "KServe ${KSERVE_VERSION} (Standard mode)"
  h upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version "$KSERVE_VERSION" \
    --namespace kserve --create-namespace \
    --wait --timeout 10m
  # Standard is KServe's current name for RawDeployment (plain Deployments and Services, no
  # Knative), and the deploymentMode annotation Slipway writes.
  # KServe makes no Ingress or HTTPRoute of its own: Slipway writes the weighted HTTPRoutes.
  h upgrade --install kserve oci://ghcr.io/kserve/charts/kserve-resources --version "$KSERVE_VERSION" \
    --namespace kserve \
    --set kserve.controller.deploymentMode=Standard \
    --set kserve.controller.gateway.disableIngressCreation=true \
    --wait --timeout 10m
  storage_container_manifest | k apply -f -
}

redis_manifest() {
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: ${FEAST_NAMESPACE}
---
# Feast's online store: one Redis, in memory only (kind-up.sh materializes it again on a re-run).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis
  namespace: ${FEAST_NAMESPACE}
  labels:
    app.kubernetes.io/name: redis
    app.kubernetes.io/part-of: slipway
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: redis
  template:
    metadata:
      labels:
        app.kubernetes.io/name: redis
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 999 # the image's redis user
        runAsGroup: 999
      containers:
        - name: redis
          image: ${REDIS_IMAGE}
          args: ["--save", "", "--appendonly", "no", "--maxmemory", "256mb", "--maxmemory-policy", "noeviction"]
          ports:
            - name: redis
              containerPort: 6379
          readinessProbe:
            exec:
              command: ["redis-cli", "ping"]
            periodSeconds: 5
          livenessProbe:
            tcpSocket:
              port: redis
            periodSeconds: 10
          resources:
            requests:
              cpu: 50m
              memory: 64Mi
            limits:
              memory: 512Mi
          securityContext:
            allowPrivilegeEscalation: false
            capabilities:
              drop: [ALL]
---
apiVersion: v1
kind: Service
metadata:
  name: redis
  namespace: ${FEAST_NAMESPACE}
  labels:
    app.kubernetes.io/name: redis
spec:
  selector:
    app.kubernetes.io/name: redis
  ports:
    - name: redis
      port: 6379
      targetPort: redis
EOF
}

install_redis() {
  log "Redis (${REDIS_IMAGE}), Feast's online store, at ${REDIS_ADDRESS}"
  redis_manifest | k apply -f -
  k rollout status deployment/redis -n "$FEAST_NAMESPACE" --timeout=5m
}

# What a cloud cluster gives Slipway's pods by other means (object storage, the platform's Feast
# settings), given here by one admission policy: every pod of a RayJob of a TrainingRun
# (slipway.dev/training-run), of an InferenceService of a ModelDeployment (slipway.dev/deployment),
# of the operator (app.kubernetes.io/name=slipway), or labelled slipway.dev/shared-data=true gets
# the shared directory mounted at /slipway-data in every container, and the variables that select
# the cluster Feast configuration (Redis online store, registry and sources on the shared
# directory). Only pod creation is mutated; the operator never sees these fields in what it owns.
shared_data_policy_manifest() {
  local api="$1"
  cat <<EOF
apiVersion: ${api}
kind: MutatingAdmissionPolicy
metadata:
  name: slipway-shared-data
spec:
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE"]
        resources: ["pods"]
  matchConditions:
    - name: slipway-pod
      expression: >-
        has(object.metadata.labels) && (
          'slipway.dev/training-run' in object.metadata.labels ||
          'slipway.dev/deployment' in object.metadata.labels ||
          object.metadata.labels.exists(k, k == '${SHARED_DATA_LABEL}' && object.metadata.labels[k] == 'true') ||
          object.metadata.labels.exists(k, k == 'app.kubernetes.io/name' && object.metadata.labels[k] == 'slipway'))
  failurePolicy: Fail
  # Again after KServe's webhook has added its storage-initializer init container.
  reinvocationPolicy: IfNeeded
  mutations:
    - patchType: ApplyConfiguration
      applyConfiguration:
        expression: >-
          Object{
            spec: Object.spec{
              volumes: [Object.spec.volumes{
                name: "slipway-data",
                hostPath: Object.spec.volumes.hostPath{path: "${DATA_MOUNT}", type: "Directory"}
              }],
              containers: object.spec.containers.map(c, Object.spec.containers{
                name: c.name,
                volumeMounts: [Object.spec.containers.volumeMounts{name: "slipway-data", mountPath: "${DATA_MOUNT}"}],
                env: [
                  Object.spec.containers.env{name: "SLIPWAY_FEAST_CONFIG", value: "cluster"},
                  Object.spec.containers.env{name: "SLIPWAY_FEAST_DATA", value: "${FEAST_DATA}"},
                  Object.spec.containers.env{name: "SLIPWAY_FEAST_REGISTRY", value: "${FEAST_REGISTRY}"},
                  Object.spec.containers.env{name: "SLIPWAY_REDIS", value: "${REDIS_ADDRESS}"}
                ]
              }),
              initContainers: (has(object.spec.initContainers) ? object.spec.initContainers : []).map(c,
                Object.spec.initContainers{
                  name: c.name,
                  volumeMounts: [Object.spec.initContainers.volumeMounts{name: "slipway-data", mountPath: "${DATA_MOUNT}"}]
                })
            }
          }
---
apiVersion: ${api}
kind: MutatingAdmissionPolicyBinding
metadata:
  name: slipway-shared-data
spec:
  policyName: slipway-shared-data
EOF
}

install_shared_data_policy() {
  local api
  api="$(admission_policy_api)"
  log "shared data: MutatingAdmissionPolicy slipway-shared-data (${api})"
  shared_data_policy_manifest "$api" | k apply -f -
}

build_images() {
  if [[ "${SKIP_BUILD:-}" == "1" ]]; then
    log "SKIP_BUILD=1: not building the images"
    local image
    for image in "$OPERATOR_IMAGE" "$TRAINER_IMAGE" "$PREDICTOR_IMAGE"; do
      docker image inspect "$image" >/dev/null 2>&1 || die "SKIP_BUILD=1 but ${image} is not in the local image store"
    done
    return
  fi
  log "building the images (context: the repository root)"
  docker build -f "$ROOT/images/operator/Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT"
  docker build -f "$ROOT/images/trainer/Dockerfile" -t "$TRAINER_IMAGE" "$ROOT"
  docker build -f "$ROOT/images/predictor/Dockerfile" -t "$PREDICTOR_IMAGE" "$ROOT"
}

load_images() {
  # kind skips an image that every node already has (same image ID).
  log "loading the images into kind"
  local image
  for image in "$OPERATOR_IMAGE" "$TRAINER_IMAGE" "$PREDICTOR_IMAGE"; do
    kind load docker-image --name "$CLUSTER" "$image"
  done
}

# Generates the churn data set into the shared directory, registers the Feast repository (the
# cluster configuration: registry on the shared directory, Redis online store) and materializes
# it, in the trainer image (it has Feast, the repository and its generator).
feast_setup_manifest() {
  cat <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: feast-setup
  namespace: ${FEAST_NAMESPACE}
spec:
  backoffLimit: 1
  activeDeadlineSeconds: 1200
  template:
    metadata:
      labels:
        ${SHARED_DATA_LABEL}: "true"
    spec:
      restartPolicy: Never
      containers:
        - name: feast
          image: ${TRAINER_IMAGE}
          imagePullPolicy: IfNotPresent
          command: ["bash", "-c"]
          args:
            - |
              set -euo pipefail
              python -m feature_repo.generate --out ${FEAST_DATA} --start ${FEAST_START} --days ${FEAST_DAYS} --customers ${FEAST_CUSTOMERS} --seed ${FEAST_SEED}
              python -m feature_repo.store apply --data ${FEAST_DATA} --config cluster
              python -m feature_repo.store materialize --data ${FEAST_DATA} --config cluster --start ${MATERIALIZE_FROM} --end ${MATERIALIZE_TO} --window-days 31
          resources:
            requests:
              cpu: 500m
              memory: 1Gi
            limits:
              memory: 3Gi
EOF
}

# Waits for a Job to succeed; shows its logs and fails when it does not.
wait_job() {
  local namespace="$1" job="$2" timeout="$3" deadline state
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    state="$(k get job "$job" -n "$namespace" -o jsonpath='{.status.succeeded}/{.status.failed}')"
    if [[ "$state" == 1/* ]]; then
      return 0
    fi
    if k get job "$job" -n "$namespace" -o jsonpath='{.status.conditions[?(@.type=="Failed")].status}' | grep -q True; then
      k logs "job/${job}" -n "$namespace" --tail=50 >&2 || true
      die "job ${namespace}/${job} failed (logs above)"
    fi
    sleep 5
  done
  k logs "job/${job}" -n "$namespace" --tail=50 >&2 || true
  die "job ${namespace}/${job} did not finish within ${timeout}s"
}

setup_feast() {
  log "Feast: the churn data set in ${FEAST_DATA}, registered and materialized into Redis"
  k delete job feast-setup -n "$FEAST_NAMESPACE" --ignore-not-found --wait=true >/dev/null
  feast_setup_manifest | k apply -f -
  wait_job "$FEAST_NAMESPACE" feast-setup 1200
}

install_slipway() {
  log "Slipway (helm/slipway)"
  # Helm installs a chart's CRDs only on first install and never upgrades them; apply them
  # server-side first so a re-run picks up schema changes too.
  k apply --server-side --force-conflicts -f "$ROOT/helm/slipway/crds/" >/dev/null
  local existed=0
  k get deployment slipway -n "$SLIPWAY_NAMESPACE" >/dev/null 2>&1 && existed=1
  h upgrade --install slipway "$ROOT/helm/slipway" \
    --namespace "$SLIPWAY_NAMESPACE" --create-namespace \
    --set image.repository="${OPERATOR_IMAGE%:*}" \
    --set image.tag="$IMAGE_TAG" \
    --set image.pullPolicy=IfNotPresent \
    --set images.trainer="$TRAINER_IMAGE" \
    --set images.predictor="$PREDICTOR_IMAGE" \
    --set prometheus.url="$PROMETHEUS_URL" \
    --set traffic.gateway.namespace="$SLIPWAY_NAMESPACE" \
    --set traffic.gateway.name="$GATEWAY_NAME" \
    --set traffic.domain="$DOMAIN" \
    --set serviceMonitor.enabled=true \
    --wait --timeout 5m
  if [[ "$existed" == 1 && "${SKIP_BUILD:-}" != "1" ]]; then
    # Same tag, maybe a new image: replicas started before this build must not keep the old one.
    k rollout restart deployment/slipway -n "$SLIPWAY_NAMESPACE"
    k rollout status deployment/slipway -n "$SLIPWAY_NAMESPACE" --timeout=5m
  fi
}

apply_examples() {
  if [[ "${SKIP_EXAMPLES:-}" == "1" ]]; then
    log "SKIP_EXAMPLES=1: not applying examples/"
    return
  fi
  log "the examples (examples/) in namespace ml"
  namespace ml
  k apply -f "$ROOT/examples/"
}

summary() {
  cat <<EOF

Slipway is running on kind cluster "${CLUSTER}" (kubectl context ${CONTEXT}).
Watch the example train, register churn-v1 and roll it out:
  kubectl --context ${CONTEXT} -n ml get trainingruns,modelversions,modeldeployments -w
  kubectl --context ${CONTEXT} -n ml get rayjobs,inferenceservices,httproutes,pods
Ask it once the ModelDeployment is Stable:
  curl -H 'Host: churn.ml.${DOMAIN}' http://localhost:8080/v1/models/churn:predict -d '{"instances": [{"customer_id": 1042}]}'
Prometheus: kubectl --context ${CONTEXT} -n monitoring port-forward svc/prometheus 9090
Scenario tests: .venv/bin/pytest tests/kind -rs        Delete it all: hack/kind-down.sh
EOF
}

main() {
  check_tools
  prepare_data_dir
  create_cluster
  helm_repos
  install_cert_manager
  install_prometheus
  install_kuberay
  install_gateway
  install_kserve
  install_redis
  install_shared_data_policy
  build_images
  load_images
  setup_feast
  install_slipway
  apply_examples
  summary
}

# Sourcing the script (e.g. to print a manifest) defines the functions without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
