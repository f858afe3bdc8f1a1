// Command etcd is the upstream etcd server, built from the Go module proxy (Debian's
// etcd-server is too old for a current kube-apiserver).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
