#!/usr/bin/env bash
# Deletes the kind cluster that hack/kind-up.sh made (and with it everything installed on it).
# The images stay in the local Docker image store.
set -euo pipefail

CLUSTER="${KIND_CLUSTER_NAME:-slipway}"

command -v kind >/dev/null 2>&1 || {
  echo "error: kind is not on PATH. Install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2
  exit 1
}

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named ${CLUSTER}; nothing to delete"
fi
