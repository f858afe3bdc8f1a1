// Command kube-controller-manager is the upstream controller manager, built at the API server's
// own release; the conformance tests run its garbage collector, so deleting a parent removes its
// children as in a real cluster.
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
