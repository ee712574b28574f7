package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testcert"
	"github.com/handoff-dev/handoff/internal/testtool"
)

// startHTTPS makes a self-signed pair for this test and starts httpd
// serving HTTPS with it; it returns the certificate file (the CA curl
// trusts) and Go's pool for it.
func startHTTPS(t *testing.T, args ...string) (*httpd, string, *x509.CertPool) {
	t.Helper()
	cert, key, err := testcert.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pool, err := testcert.Pool(cert)
	if err != nil {
		t.Fatal(err)
	}
	return startHTTPD(t, append(args, "-tls-cert", cert, "-tls-key", key)...), cert, pool
}

// curlHTTPS fetches url with curl and the options, and returns what
// curl printed: the body, then "<http version>".
func curlHTTPS(t *testing.T, ca, url string, opts ...string) string {
	t.Helper()
	bin := testtool.Need(t, "curl", "apt-get install curl")
	args := append([]string{"-sS", "--cacert", ca, "-w", "%{http_version}"}, opts...)
	out, err := exec.Command(bin, append(args, url)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %q: %v: %s", opts, err, out)
	}
	return string(out)
}

// TestHTTPS: httpd with -tls-cert and -tls-key, in rolling and full
// mode, across 10 upgrades: Go's keep-alive client keeps its one HTTP/1.1
// TLS connection, answered each time by the new process, and curl on new
// connections gets HTTP/1.1 over TLS 1.2 and HTTP/2 over TLS 1.3 from the
// new process.
func TestHTTPS(t *testing.T) {
	for _, mode := range []string{modeRolling, modeFull} {
		t.Run(mode, func(t *testing.T) {
			h, ca, pool := startHTTPS(t, "-upgrade-mode", mode)
			var dials atomic.Int32
			keep := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}},
				TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
				MaxConnsPerHost: 1,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					dials.Add(1)
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				},
			}}
			defer keep.CloseIdleConnections()
			url := "https://localhost:" + strings.Split(h.addr, ":")[1] + "/"
			pid := h.pid
			for i := range 11 {
				if i > 0 {
					pid = h.upgradeFrom(t, pid)
				}
				want := fmt.Sprintf("v1 %d\n", pid)
				if code, body := get(t, keep, url); code != 200 || body != want {
					t.Fatalf("upgrade %d: keep-alive GET = %d %q, want %q", i, code, body, want)
				}
				if out := curlHTTPS(t, ca, url, "--http1.1", "--tlsv1.2", "--tls-max", "1.2"); out != want+"1.1" {
					t.Fatalf("upgrade %d: curl HTTP/1.1 printed %q, want %q", i, out, want+"1.1")
				}
				if out := curlHTTPS(t, ca, url, "--http2", "--tlsv1.3"); out != want+"2" {
					t.Fatalf("upgrade %d: curl HTTP/2 printed %q, want %q", i, out, want+"2")
				}
			}
			if n := dials.Load(); n != 1 {
				t.Errorf("the keep-alive client dialled %d times, want its one connection kept across 10 upgrades", n)
			}
			// One handshake per connection, summed over the chain: the
			// keep-alive client's and two curls' for each of the 11 processes.
			if n := h.handshakes(t, "handoff_tls_handshakes_total"); n != 1+2*11 {
				t.Errorf("handoff_tls_handshakes_total = %v, want %d", n, 1+2*11)
			}
			h.stop(t, pid)
		})
	}
}

// TestHTTPSListenersHandshakes: in listeners mode (crypto/tls, connections
// drain), httpd_tls_handshakes_total counts every handshake of the chain.
func TestHTTPSListenersHandshakes(t *testing.T) {
	h, ca, _ := startHTTPS(t, "-upgrade-mode", modeListeners)
	url := "https://localhost:" + strings.Split(h.addr, ":")[1] + "/"
	pid := h.pid
	for i := range 3 {
		if i > 0 {
			pid = h.upgradeFrom(t, pid)
		}
		if out := curlHTTPS(t, ca, url, "--http1.1"); out != fmt.Sprintf("v1 %d\n1.1", pid) {
			t.Fatalf("upgrade %d: curl printed %q", i, out)
		}
	}
	if n := h.handshakes(t, "httpd_tls_handshakes_total"); n != 3 {
		t.Errorf("httpd_tls_handshakes_total = %v, want 3", n)
	}
	h.stop(t, pid)
}

// handshakes is the sum of metric's samples (every label set) on
// /metrics.
func (h *httpd) handshakes(t *testing.T, metric string) float64 {
	t.Helper()
	_, body := get(t, fresh, "http://"+h.metrics+"/metrics")
	var sum float64
	for _, l := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(l, " ")
		if name, _, _ = strings.Cut(name, "{"); !ok || name != metric {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics: %q: %v", l, err)
		}
		sum += v
	}
	return sum
}

// upgradeFrom upgrades the process pid by SIGHUP, waits until it says the
// upgrade is complete, and returns its successor's pid.
func (h *httpd) upgradeFrom(t *testing.T, pid int) int {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.logs.await(t, `msg="upgrade complete"`, fmt.Sprintf("pid=%d ", pid))
	next := readPID(t, h.pidfile)
	if next == pid {
		t.Fatalf("pid file still names %d after the upgrade", pid)
	}
	return next
}
