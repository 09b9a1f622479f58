// kubelet-streams serves the test node's kubelet port: pods/exec over SPDY and websockets
// with the kubelet's own streaming code (k8s.io/cri-streaming's remotecommand.ServeExec, as
// pkg/kubelet/server does), and everything else (containerLogs, healthz) by proxying to the
// node agent's plain-HTTP unix socket (root's only, in the node's directory).
//
// The command to run is the agent's to decide: for each exec the helper asks
// POST /internal/exec {"namespace","pod","container","command"} on that socket and gets back
// {"argv","env","cwd"} (an nsenter into the container's namespaces) or an error status.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

type plan struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`
}

type executor struct{ client *http.Client }

const backendURL = "http://node-agent"

func unixClient(socket string) *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial}}
}

func (e executor) resolve(ctx context.Context, ns, pod, container string, cmd []string) (*plan, error) {
	body, _ := json.Marshal(map[string]any{"namespace": ns, "pod": pod, "container": container, "command": cmd})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, backendURL+"/internal/exec", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(strings.TrimSpace(string(data)))
	}
	var p plan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ExecInContainer runs the agent's argv with the client's streams; name is "<pod>_<namespace>".
func (e executor) ExecInContainer(ctx context.Context, name string, uid string, container string, cmd []string,
	in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	pod, ns, _ := strings.Cut(name, "_")
	p, err := e.resolve(ctx, ns, pod, container, cmd)
	if err != nil {
		return err
	}
	c := exec.CommandContext(ctx, p.Argv[0], p.Argv[1:]...)
	c.Env, c.Dir = p.Env, p.Cwd
	c.Stdin, c.Stdout, c.Stderr = in, out, errw
	if tty { // no pty here: the client asked for one stream, as with a tty
		c.Stderr = out
	}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	err = c.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return utilexec.CodeExitError{Err: err, Code: exitErr.ExitCode()}
	}
	return err
}

func main() {
	listen := flag.String("listen", "127.0.0.1:10250", "address of the kubelet port")
	cert := flag.String("tls-cert", "", "serving certificate")
	key := flag.String("tls-key", "", "serving key")
	clientCA := flag.String("client-ca", "", "CA whose client certificates (the API server's) may call")
	backend := flag.String("backend", "", "the node agent's plain-HTTP unix socket")
	flag.Parse()
	target, _ := url.Parse(backendURL)
	pem, err := os.ReadFile(*clientCA)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := unixClient(*backend)
	ex := executor{client: client}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = client.Transport
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		serveExec(w, r, ex, r.PathValue("ns"), r.PathValue("pod"), "", r.PathValue("container"))
	})
	mux.HandleFunc("/exec/{ns}/{pod}/{uid}/{container}", func(w http.ResponseWriter, r *http.Request) {
		serveExec(w, r, ex, r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid"), r.PathValue("container"))
	})
	mux.Handle("/", proxy)
	srv := &http.Server{
		Addr:      *listen,
		Handler:   mux,
		TLSConfig: &tls.Config{ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	}
	log.Printf("kubelet-streams on %s, backend %s", *listen, *backend)
	log.Fatal(srv.ListenAndServeTLS(*cert, *key))
}

func serveExec(w http.ResponseWriter, r *http.Request, ex executor, ns, pod, uid, container string) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "you must specify at least 1 command", http.StatusBadRequest)
		return
	}
	log.Printf("exec %s/%s -c %s %q", ns, pod, container, cmd)
	remotecommand.ServeExec(w, r, ex, fmt.Sprintf("%s_%s", pod, ns), uid, container, cmd, opts,
		4*time.Hour, 30*time.Second, remotecommand.SupportedStreamingProtocols)
}
