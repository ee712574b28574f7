package app

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testtool"
)

// The test binary doubles as httpd: with envServer set, TestMain runs Run
// with the process's arguments. Upgrades start the test binary again, with
// the same arguments and environment.
const envServer = "HTTPD_APP_TEST_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(envServer) != "" {
		os.Exit(Run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// httpd is a chain of server processes started by one test; they share
// the test's stderr pipe, from which the test learns what they did.
type httpd struct {
	addr, metrics, pidfile string
	pid                    int // the first process
	logs                   *logLines
	done                   chan struct{} // closed at the first process's exit
	err                    error
}

// launch starts httpd with -listen, -pidfile and -metrics set and args
// after them, and returns at once.
func launch(t *testing.T, args ...string) *httpd {
	t.Helper()
	dir := t.TempDir()
	h := &httpd{addr: testtool.FreeAddr(t), metrics: testtool.FreeAddr(t), pidfile: filepath.Join(dir, "pid"), done: make(chan struct{})}
	args = append([]string{"-listen", h.addr, "-metrics", h.metrics, "-pidfile", h.pidfile}, args...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envServer+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	h.pid = cmd.Process.Pid
	h.logs = readLines(r)
	go func() { h.err = cmd.Wait(); close(h.done) }()
	t.Cleanup(func() {
		syscall.Kill(-h.pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("server logs:\n%s", h.logs)
		}
	})
	return h
}

// startHTTPD launches httpd and waits until it serves.
func startHTTPD(t *testing.T, args ...string) *httpd {
	t.Helper()
	h := launch(t, args...)
	h.logs.await(t, "msg=serving", fmt.Sprintf("pid=%d ", h.pid))
	return h
}

// exitCode waits for the first process to exit and returns its code.
func (h *httpd) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("pid %d did not exit in 30s", h.pid)
	}
	var exit *exec.ExitError
	if errors.As(h.err, &exit) {
		return exit.ExitCode()
	}
	if h.err != nil {
		t.Fatal(h.err)
	}
	return 0
}

// stop sends SIGTERM to pid and waits until every process of the chain
// has exited (their shared stderr is closed).
func (h *httpd) stop(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.logs.closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the servers did not exit in 30s after SIGTERM")
	}
}

func (h *httpd) url(path string) string { return "http://" + h.addr + path }

// get answers GET url's status and body.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// fresh is a client that opens a new connection for every request.
var fresh = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func TestServes(t *testing.T) {
	h := startHTTPD(t, "-version", "v7")
	if code, body := get(t, fresh, h.url("/")); code != 200 || body != fmt.Sprintf("v7 %d\n", h.pid) {
		t.Errorf("GET / = %d %q, want 200 %q", code, body, fmt.Sprintf("v7 %d\n", h.pid))
	}
	if code, body := get(t, fresh, h.url("/slow?ms=30")); code != 200 || body != fmt.Sprintf("v7 %d slept 30\n", h.pid) {
		t.Errorf("GET /slow?ms=30 = %d %q", code, body)
	}
	for _, path := range []string{"/slow?ms=x", "/slow?ms=-1", "/slow?ms=3600000"} {
		if code, _ := get(t, fresh, h.url(path)); code != http.StatusBadRequest {
			t.Errorf("GET %s = %d, want 400", path, code)
		}
	}
	if code, _ := get(t, fresh, h.url("/nope")); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", code)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	resp, err := fresh.Post(h.url("/echo"), "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Errorf("POST /echo: %d, %d bytes back of %d, %v", resp.StatusCode, len(got), len(body), err)
	}
	if code, _ := get(t, fresh, "http://"+h.metrics+"/metrics"); code != 200 {
		t.Errorf("GET /metrics = %d", code)
	}
	h.stop(t, h.pid)
	if code := h.exitCode(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// TestUpgradeListeners upgrades by SIGHUP under a keep-alive client with a
// request in flight: the old process answers it, the new one answers new
// connections, and the keep-alive client reaches the new one once the old
// one has closed its connection.
func TestUpgradeListeners(t *testing.T) {
	h := startHTTPD(t, "-upgrade-mode", "listeners", "-drain-timeout", "10s")
	keep := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer keep.CloseIdleConnections()
	if _, body := get(t, keep, h.url("/")); body != fmt.Sprintf("v1 %d\n", h.pid) {
		t.Fatalf("GET / = %q before the upgrade", body)
	}
	type reply struct {
		code int
		body string
		err  error
	}
	slow := make(chan reply, 1)
	go func() {
		resp, err := keep.Get(h.url("/slow?ms=1500"))
		if err != nil {
			slow <- reply{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- reply{resp.StatusCode, string(b), err}
	}()
	// In flight once the server has counted it.
	h.awaitMetric(t, `httpd_requests_total{route="/slow"} 1`)

	if err := syscall.Kill(h.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.logs.await(t, `msg="upgrade complete"`, fmt.Sprintf("pid=%d ", h.pid))
	next := readPID(t, h.pidfile)
	if next == h.pid {
		t.Fatalf("pid file still names %d after the upgrade", h.pid)
	}
	for range 3 {
		if code, body := get(t, fresh, h.url("/")); code != 200 || body != fmt.Sprintf("v1 %d\n", next) {
			t.Errorf("GET / on a new connection = %d %q, want the new process %d", code, body, next)
		}
	}
	r := <-slow
	if r.err != nil || r.code != 200 || r.body != fmt.Sprintf("v1 %d slept 1500\n", h.pid) {
		t.Errorf("the request in flight across the upgrade: %d %q %v, want the old process's reply", r.code, r.body, r.err)
	}
	h.logs.await(t, `msg="drain done"`, fmt.Sprintf("pid=%d ", h.pid))
	if code := h.exitCode(t); code != 0 {
		t.Errorf("old process exited %d, want 0", code)
	}
	// The old process closed the client's connection; its next request
	// opens one to the new process.
	if code, body := get(t, keep, h.url("/")); code != 200 || body != fmt.Sprintf("v1 %d\n", next) {
		t.Errorf("keep-alive client after the drain: %d %q, want the new process %d", code, body, next)
	}
	h.stop(t, next)
}

// TestUpgradeFull: in full mode a keep-alive client's one connection is
// answered by the new process after the upgrade (never redialled), and a
// request in flight at the upgrade is answered by the old one.
func TestUpgradeFull(t *testing.T) {
	for _, mode := range []string{modeFull, modeRolling} {
		t.Run(mode, func(t *testing.T) { upgradeKeepsConnection(t, mode) })
	}
}

// upgradeKeepsConnection: see TestUpgradeFull.
func upgradeKeepsConnection(t *testing.T, mode string) {
	h := startHTTPD(t, "-upgrade-mode", mode)
	var dials atomic.Int32
	keep := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	defer keep.CloseIdleConnections()
	if _, body := get(t, keep, h.url("/")); body != fmt.Sprintf("v1 %d\n", h.pid) {
		t.Fatalf("GET / = %q before the upgrade", body)
	}
	slowClient := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}}
	defer slowClient.CloseIdleConnections()
	slow := make(chan string, 1)
	go func() {
		_, body := get(t, slowClient, h.url("/slow?ms=500"))
		slow <- body
	}()
	h.awaitMetric(t, `httpd_requests_total{route="/slow"} 1`)
	if err := syscall.Kill(h.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.logs.await(t, `msg="upgrade complete"`, fmt.Sprintf("pid=%d ", h.pid))
	next := readPID(t, h.pidfile)
	if next == h.pid {
		t.Fatalf("pid file still names %d after the upgrade", h.pid)
	}
	if body := <-slow; body != fmt.Sprintf("v1 %d slept 500\n", h.pid) {
		t.Errorf("the request in flight: %q, want the old process's reply", body)
	}
	for range 3 {
		if code, body := get(t, keep, h.url("/")); code != 200 || body != fmt.Sprintf("v1 %d\n", next) {
			t.Errorf("keep-alive GET / = %d %q, want the new process %d", code, body, next)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the keep-alive client dialled %d times, want its one connection kept across the upgrade", n)
	}
	h.stop(t, next)
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-upgrade-mode", "restart"}, {"stray"}, {"-drain-timeout", "0s"}, {"-park-timeout", "-1s"}, {"-tls-cert", "c.pem"}} {
		if code := launch(t, args...).exitCode(t); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// awaitMetric polls /metrics until it has line.
func (h *httpd) awaitMetric(t *testing.T, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, body := get(t, fresh, "http://"+h.metrics+"/metrics"); strings.Contains(body, line) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("/metrics never had %q", line)
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// logLines collects the servers' stderr lines.
type logLines struct {
	mu     sync.Mutex
	cond   *sync.Cond
	lines  []string
	closed chan struct{} // every writer has exited
}

func readLines(r io.ReadCloser) *logLines {
	l := &logLines{closed: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.cond.Broadcast()
			l.mu.Unlock()
		}
		l.mu.Lock()
		close(l.closed) // under the lock, so that a waiter sees it when it wakes
		l.cond.Broadcast()
		l.mu.Unlock()
	}()
	return l
}

// await waits for a line holding every one of subs.
func (l *logLines) await(t *testing.T, subs ...string) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i := 0; ; i++ {
			for i >= len(l.lines) {
				select {
				case <-l.closed:
					found <- ""
					return
				default:
				}
				l.cond.Wait()
			}
			if containsAll(l.lines[i], subs) {
				found <- l.lines[i]
				return
			}
		}
	}()
	select {
	case line := <-found:
		if line == "" {
			t.Fatalf("the servers exited before logging %q", subs)
		}
		return line
	case <-time.After(30 * time.Second):
		t.Fatalf("no log line with %q in 30s", subs)
	}
	return ""
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
