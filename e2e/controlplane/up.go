package main

// "devcluster up": embedded etcd, then kube-apiserver in this process, then the
// controller-manager as a child process (it keeps global state of its own, so it must not share
// a process with the apiserver). SIGTERM/SIGINT stop all three; the child also dies with us via
// Pdeathsig if we are killed hard.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// auditPolicy records every write (and only writes) at Metadata level: enough for tests to
// count what the operator changes, without request bodies (which would include Secret data).
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`

func runUp(args []string) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory (PKI, etcd data, kubeconfig, logs); created if missing")
	port := fs.Int("port", 0, "apiserver port on 127.0.0.1 (0 picks a free one)")
	exitWithParent := fs.Bool("exit-with-parent", false, "shut down when the parent process exits (for test harnesses)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "devcluster up: --dir is required")
		return 2
	}
	if err := up(*dir, *port, *exitWithParent); err != nil {
		fmt.Fprintln(os.Stderr, "devcluster up:", err)
		return 1
	}
	return 0
}

func up(dir string, port int, exitWithParent bool) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	p := newPKIPaths(filepath.Join(dir, "pki"))
	if err := ensurePKI(p); err != nil {
		return fmt.Errorf("generate PKI: %w", err)
	}
	readyFile := filepath.Join(dir, "ready")
	_ = os.Remove(readyFile)
	if err := os.WriteFile(filepath.Join(dir, "devcluster.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}

	if port == 0 {
		if port, err = freePort(); err != nil {
			return err
		}
	}
	etcdClientPort, err := freePort()
	if err != nil {
		return err
	}
	etcdPeerPort, err := freePort()
	if err != nil {
		return err
	}

	etcd, err := startEtcd(filepath.Join(dir, "etcd"), etcdClientPort, etcdPeerPort)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	defer etcd.Close()

	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, p, server); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return err
	}

	apiArgs := []string{
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", etcdClientPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1", // without it startup fails on hosts with no default route
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "cert"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-signing-key-file=" + p.saKey,
		"--service-account-key-file=" + p.saPub,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none", // 127.0.0.1 is not a valid Endpoint for the kubernetes Service
		"--allow-privileged=true",
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + filepath.Join(dir, "audit.log"),
		"--audit-log-maxsize=100",
		"--audit-log-maxbackup=1",
	}
	apiDone := make(chan int, 1)
	go func() {
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(apiArgs)
		apiDone <- cli.Run(cmd)
	}()

	if err := waitReady(server, p, apiDone); err != nil {
		return err
	}

	kcm, err := startControllerManager(dir, kubeconfig)
	if err != nil {
		return fmt.Errorf("start controller-manager: %w", err)
	}
	kcmDone := make(chan struct{})
	go func() { _ = kcm.Wait(); close(kcmDone) }()
	// The controller-manager goes first on shutdown: it only talks to the apiserver, and waiting
	// for it after the apiserver is gone would stall on its retries.
	stopKCM := func() {
		_ = kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-kcmDone:
		case <-time.After(5 * time.Second):
			_ = kcm.Process.Kill()
			<-kcmDone
		}
	}
	defer stopKCM()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-signals; stopKCM() }()
	if exitWithParent {
		go watchParent()
	}

	if err := os.WriteFile(readyFile, []byte(kubeconfig+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Printf("READY kubeconfig=%s server=%s\n", kubeconfig, server)

	code := <-apiDone // returns after SIGTERM/SIGINT (the apiserver owns signal handling)
	_ = os.Remove(readyFile)
	if code != 0 {
		return fmt.Errorf("kube-apiserver exited with code %d", code)
	}
	return nil
}

func startEtcd(dataDir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "devcluster"
	cfg.Dir = dataDir
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true // a throwaway test cluster: durability is not worth the latency
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(time.Minute):
		e.Close()
		return nil, fmt.Errorf("etcd not ready after 1m")
	}
}

func startControllerManager(dir, kubeconfig string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "controller-manager.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "controller-manager",
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		"--leader-elect=false",
		"--secure-port=0", // no serving endpoint needed; avoids port clashes between clusters
		"--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// waitReady polls /readyz as the admin user until it answers 200.
func waitReady(server string, p pkiPaths, apiDone <-chan int) error {
	caPEM, err := os.ReadFile(p.caCert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	pair, err := tls.LoadX509KeyPair(p.adminCert, p.adminKey)
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12,
		}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case code := <-apiDone:
			return fmt.Errorf("kube-apiserver exited during startup with code %d", code)
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready after 3m")
		case <-tick.C:
			resp, err := client.Get(server + "/readyz")
			if err != nil {
				continue
			}
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// watchParent sends ourselves SIGTERM once the process that started us is gone, so a test
// harness that crashes or is killed never leaves a control plane behind.
func watchParent() {
	parent := os.Getppid()
	for range time.Tick(time.Second) {
		if os.Getppid() != parent {
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			return
		}
	}
}
