#!/usr/bin/env bash
# Deletes the kind cluster that hack/kind-up.sh made (and with it everything installed on it), and
# empties the shared data directory (/tmp/slipway-kind: Feast data, checkpoints, model artifacts).
# KEEP_DATA=1 keeps the directory's contents. The images stay in the local Docker image store.
set -euo pipefail

CLUSTER="${KIND_CLUSTER_NAME:-slipway}"
DATA_HOST_DIR=/tmp/slipway-kind # kind-config.yaml mounts it at /slipway-data on every node
DATA_MOUNT=/slipway-data

command -v kind >/dev/null 2>&1 || {
  echo "error: kind is not on PATH. Install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2
  exit 1
}

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "no kind cluster named ${CLUSTER}; nothing to delete"
  exit 0
fi

if [[ "${KEEP_DATA:-}" != "1" ]]; then
  # The pods wrote as their own users (uid 1000, 10001): a node (root in its container) can remove
  # what this user may not.
  node="${CLUSTER}-control-plane"
  if docker exec "$node" test -d "$DATA_MOUNT" 2>/dev/null; then
    echo "emptying ${DATA_HOST_DIR} (KEEP_DATA=1 keeps it)"
    docker exec "$node" find "$DATA_MOUNT" -mindepth 1 -delete
  fi
fi
kind delete cluster --name "$CLUSTER"
if [[ "${KEEP_DATA:-}" != "1" ]]; then
  rmdir "$DATA_HOST_DIR" 2>/dev/null || true
fi
