#!/usr/bin/env bash
# Brings up a local kind cluster with everything Slipway runs on, then Slipway itself:
#   kind (kind-config.yaml: one control plane, two workers, the gateway on localhost:8080)
#   cert-manager            (KServe's webhook certificates)
#   kube-prometheus-stack   (Prometheus for rollout analysis and the operator's metrics)
#   KubeRay operator        (runs the RayJobs that TrainingRuns become)
#   Gateway API CRDs + Envoy Gateway, a Gateway "slipway-gateway" (weighted HTTPRoutes for canaries)
#   KServe in RawDeployment mode (no Knative; KServe >= 0.19 calls this mode "Standard")
#   the operator, trainer and predictor images, built with docker and loaded into kind
#   helm/slipway, with those images
#
# Re-running it is safe: every step is an install-or-upgrade. Versions are pinned below and can be
# overridden from the environment (e.g. KSERVE_VERSION=v0.20.0 hack/kind-up.sh).
# SKIP_BUILD=1 skips the image builds (e.g. when they are already loaded).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-slipway}"
CONTEXT="kind-${CLUSTER}"

KUBERAY_VERSION="${KUBERAY_VERSION:-1.7.0}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.20.2}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.21.0}"
ENVOY_GATEWAY_VERSION="${ENVOY_GATEWAY_VERSION:-v1.10.0}"
KUBE_PROMETHEUS_STACK_VERSION="${KUBE_PROMETHEUS_STACK_VERSION:-81.6.2}"

# The images keep the tag the API contract's manifests name, so they run what was loaded.
IMAGE_TAG="${SLIPWAY_IMAGE_TAG:-0.1.0}"
REGISTRY="${SLIPWAY_IMAGE_REGISTRY:-ghcr.io/example}"
OPERATOR_IMAGE="${REGISTRY}/slipway-operator:${IMAGE_TAG}"
TRAINER_IMAGE="${REGISTRY}/slipway-trainer:${IMAGE_TAG}"
PREDICTOR_IMAGE="${REGISTRY}/slipway-predictor:${IMAGE_TAG}"

SLIPWAY_NAMESPACE=slipway-system
GATEWAY_NODE_PORT=30080 # kind-config.yaml maps it to localhost:8080

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not on PATH. $2"
}

# Every call names the kind context, so nothing here ever touches another cluster.
k() { kubectl --context "$CONTEXT" "$@"; }
h() { helm --kube-context "$CONTEXT" "$@"; }

check_tools() {
  need docker "Install Docker: https://docs.docker.com/engine/install/"
  need kind "Install kind (v0.33.0 or newer): https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  need helm "Install Helm 3: https://helm.sh/docs/intro/install/"
  need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
  docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer (is Docker running, and may this user use it?)"
}

create_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "kind cluster ${CLUSTER} exists; reusing it"
  else
    log "creating kind cluster ${CLUSTER}"
    kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 180s
  fi
  k cluster-info >/dev/null
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

install_prometheus() {
  log "kube-prometheus-stack ${KUBE_PROMETHEUS_STACK_VERSION}"
  # Select every ServiceMonitor/PodMonitor, not only the ones labelled with this release, so the
  # operator's ServiceMonitor and the predictors' monitors are scraped. Grafana and Alertmanager
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
}

install_kuberay() {
  log "KubeRay operator ${KUBERAY_VERSION}"
  h upgrade --install kuberay-operator kuberay/kuberay-operator --version "$KUBERAY_VERSION" \
    --namespace ray-system --create-namespace \
    --wait --timeout 10m
}

install_gateway() {
  log "Gateway API CRDs and Envoy Gateway ${ENVOY_GATEWAY_VERSION}"
  # The Gateway API CRDs of the release Envoy Gateway is tested with, from its CRD chart; applied
  # server-side because they are too large for a client-side apply's annotation.
  h template envoy-gateway-crds oci://docker.io/envoyproxy/gateway-crds-helm \
    --version "$ENVOY_GATEWAY_VERSION" \
    --set crds.gatewayAPI.enabled=true \
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
  name: slipway-gateway   # the chart's traffic.gateway default
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
  k wait --for=condition=Programmed gateway/slipway-gateway -n "$SLIPWAY_NAMESPACE" --timeout=5m
}

install_kserve() {
  log "KServe ${KSERVE_VERSION} (RawDeployment/Standard mode)"
  h upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version "$KSERVE_VERSION" \
    --namespace kserve --create-namespace \
    --wait --timeout 10m
  # Standard is KServe's current name for RawDeployment (plain Deployments and Services, no
  # Knative); the RawDeployment annotation Slipway writes is still accepted as its alias.
  # KServe makes no Ingress or HTTPRoute of its own: Slipway writes the weighted HTTPRoutes.
  h upgrade --install kserve oci://ghcr.io/kserve/charts/kserve-resources --version "$KSERVE_VERSION" \
    --namespace kserve \
    --set kserve.controller.deploymentMode=Standard \
    --set kserve.controller.gateway.disableIngressCreation=true \
    --wait --timeout 10m
}

build_images() {
  if [[ "${SKIP_BUILD:-}" == "1" ]]; then
    log "SKIP_BUILD=1: not building the images"
    return
  fi
  log "building the images (context: the repository root)"
  docker build -f "$ROOT/images/operator/Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT"
  docker build -f "$ROOT/images/trainer/Dockerfile" -t "$TRAINER_IMAGE" "$ROOT"
  docker build -f "$ROOT/images/predictor/Dockerfile" -t "$PREDICTOR_IMAGE" "$ROOT"
  log "loading the images into kind"
  for image in "$OPERATOR_IMAGE" "$TRAINER_IMAGE" "$PREDICTOR_IMAGE"; do
    kind load docker-image --name "$CLUSTER" "$image"
  done
}

install_slipway() {
  log "Slipway (helm/slipway)"
  # Helm installs a chart's CRDs only on first install and never upgrades them; apply them
  # server-side first so a re-run picks up schema changes too.
  k apply --server-side --force-conflicts -f "$ROOT/helm/slipway/crds/" >/dev/null
  h upgrade --install slipway "$ROOT/helm/slipway" \
    --namespace "$SLIPWAY_NAMESPACE" --create-namespace \
    --set image.repository="${OPERATOR_IMAGE%:*}" \
    --set image.tag="$IMAGE_TAG" \
    --set image.pullPolicy=IfNotPresent \
    --set serviceMonitor.enabled=true \
    --wait --timeout 5m
  # The namespace the API contract's manifests use.
  namespace ml
}

main() {
  check_tools
  create_cluster
  helm_repos
  install_cert_manager
  install_prometheus
  install_kuberay
  install_gateway
  install_kserve
  build_images
  install_slipway
  cat <<EOF

Slipway is running on kind cluster "${CLUSTER}" (kubectl context ${CONTEXT}).
  kubectl --context ${CONTEXT} -n ${SLIPWAY_NAMESPACE} get pods
  kubectl --context ${CONTEXT} apply -f tests/manifests/contract.yaml
  kubectl --context ${CONTEXT} -n ml get tr,mv,md
Gateway: http://localhost:8080   Prometheus: kubectl --context ${CONTEXT} -n monitoring port-forward svc/prometheus 9090
Delete it all with hack/kind-down.sh.
EOF
}

main "$@"
