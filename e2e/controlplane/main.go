// Command devcluster is pki-operator's local Kubernetes control plane for development and
// end-to-end tests: a real kube-apiserver with embedded etcd, plus the garbage-collector,
// namespace and service-account controllers of kube-controller-manager, all built from the
// upstream Go modules pinned in go.mod. It is one multi-call binary so that the expensive
// Kubernetes packages are compiled and linked once:
//
//	devcluster up --dir DIR [--port N]   start a cluster whose state lives in DIR
//	devcluster kubectl ARGS...           the upstream kubectl of the same version
//	devcluster controller-manager ARGS   internal: the controller-manager child process
//
// When invoked through a symlink named "kubectl" it behaves as kubectl.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		os.Exit(runKubectl(os.Args[1:]))
	}
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	sub, rest := os.Args[1], os.Args[2:]
	switch sub {
	case "up":
		os.Exit(runUp(rest))
	case "kubectl":
		os.Exit(runKubectl(rest))
	case "controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	default:
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: devcluster up --dir DIR [--port N] | devcluster kubectl ARGS...")
}

func runKubectl(args []string) int {
	// kubectl reads os.Args itself for some plugin handling; present it as plain kubectl.
	os.Args = append([]string{"kubectl"}, args...)
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}
