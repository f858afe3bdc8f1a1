//go:build tools

// Package tools pins helm's command in this module. Helm keeps its root command unexported in
// its own main package (helm.sh/helm/v3/cmd/helm), so we cannot write a main that calls it;
// instead this blank import keeps the module's requirements complete, and the binary is built
// with `go build helm.sh/helm/v3/cmd/helm` from this directory (see
// operator/slipway/controlplane/helm.py).
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
