// Command kube-scheduler is the upstream scheduler, built at the API server's own release; the
// conformance tests run it so pods land on kwok's fake nodes (a GPU node among them) by the real
// scheduling rules: resources, taints and tolerations.
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
