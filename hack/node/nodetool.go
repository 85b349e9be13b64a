// nodetool: the one static binary of the real node's test image (hack/images.sh builds it into
// the FROM-scratch image mcp-nodetool:latest; hack/node-smoke.sh drives it). No shell, no
// busybox: a small HTTP server and the clients the smoke checks need.
//
//	nodetool serve [ADDR]        / answers "hello from HOSTNAME", /healthz "ok"; until SIGTERM
//	nodetool get URL             GET, body to stdout; exit 1 on an error or a status >= 400
//	nodetool lookup NAME         the addresses NAME resolves to (the pod's /etc/resolv.conf)
//	nodetool mcp-initialize URL  POST an MCP initialize; prints the answer, exit 1 without serverInfo
//	nodetool kube PATH           GET PATH from the API server as the pod's ServiceAccount (TLS
//	                             verified with its ca.crt), the way an in-cluster client does
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const timeout = 5 * time.Second

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: nodetool serve|get|lookup|mcp-initialize ARG"))
	}
	arg := ""
	if len(os.Args) > 2 {
		arg = os.Args[2]
	}
	switch os.Args[1] {
	case "serve":
		if arg == "" {
			arg = ":8080"
		}
		serve(arg)
	case "get":
		body, err := request(http.MethodGet, arg, nil)
		fmt.Print(body)
		fail(err)
	case "lookup":
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, arg)
		fail(err)
		fmt.Println(strings.Join(addrs, " "))
	case "mcp-initialize":
		const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",` +
			`"capabilities":{},"clientInfo":{"name":"nodetool","version":"1"}}}`
		body, err := request(http.MethodPost, arg, strings.NewReader(initialize))
		fmt.Println(body)
		fail(err)
		if !strings.Contains(body, `"serverInfo"`) {
			fail(fmt.Errorf("no serverInfo in the answer"))
		}
	case "kube":
		body, err := kube(arg)
		fmt.Println(body)
		fail(err)
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func fail(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodetool:", err)
		os.Exit(1)
	}
}

// request sends one request (MCP's Accept and Content-Type with a body) and returns the body.
func request(method, url string, body io.Reader) (string, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
	}
	return send(&http.Client{Timeout: timeout}, req)
}

// send returns the answer's body; a status >= 400 is an error.
func send(client *http.Client, req *http.Request) (string, error) {
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode >= 400 {
		err = fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return string(b), err
}

func kube(path string) (string, error) {
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
	token, err := os.ReadFile(sa + "token")
	if err != nil {
		return "", err
	}
	ca, err := os.ReadFile(sa + "ca.crt")
	if err != nil {
		return "", err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return "", fmt.Errorf("no certificate in %sca.crt", sa)
	}
	host := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	req, err := http.NewRequest(http.MethodGet, "https://"+host+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	return send(client, req)
}

func serve(addr string) {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "hello from %s\n", host) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	ln, err := net.Listen("tcp", addr)
	fail(err)
	fmt.Printf("nodetool serving on %s as uid %d\n", ln.Addr(), os.Getuid())
	go func() { fail(http.Serve(ln, mux)) }()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
