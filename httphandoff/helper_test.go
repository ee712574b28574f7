//go:build linux

package httphandoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/handoff-dev/handoff/internal/testtool"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// The test binary doubles as the HTTP server under test (TestMain runs
// serverMain when envRole says so); every process of an upgrade chain is
// one. Each says "ready <pid> <addr>" in the events file once it serves.
const (
	envRole   = "HTTPHANDOFF_TEST_ROLE"
	envEvents = "HTTPHANDOFF_TEST_EVENTS"
	envFail   = "HTTPHANDOFF_TEST_FAIL"    // a file: while it exists, a new process exits at once
	envIdle   = "HTTPHANDOFF_TEST_IDLE"    // http.Server.IdleTimeout, if set
	envRoll   = "HTTPHANDOFF_TEST_ROLLING" // set: every process upgrades in Rolling mode
	envHeader = "HTTPHANDOFF_TEST_HEADER"  // http.Server.ReadHeaderTimeout, if set
	envPark   = "HTTPHANDOFF_TEST_PARK"    // handoff.Options.ParkTimeout; default 3s
	envTLS    = "HTTPHANDOFF_TEST_TLS"     // a directory with cert.pem and key.pem: serve HTTPS (tls_linux_test.go)
	envLinger = "HTTPHANDOFF_TEST_LINGER"  // Server.HTTP2Linger, if set
)

func TestMain(m *testing.M) {
	if os.Getenv(envRole) == "server" {
		serverMain()
		return
	}
	os.Exit(m.Run())
}

func event(format string, args ...any) {
	f, err := os.OpenFile(os.Getenv(envEvents), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format+"\n", args...)
}

// handler answers every request with its pid, so a client knows which
// process answered: GET / at once, GET /hold?name=X once the test
// releases it, POST /echo with the body.
func handler() http.Handler {
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, pid+"\n")
	})
	mux.HandleFunc("GET /hold", func(w http.ResponseWriter, r *http.Request) {
		// A barrier over a pipe: the test made the FIFO, and its writer's
		// close releases the request.
		name := r.URL.Query().Get("name")
		event("holding %s %s", pid, name)
		if f, err := os.Open(filepath.Join(filepath.Dir(os.Getenv(envEvents)), name)); err == nil {
			io.Copy(io.Discard, f)
			f.Close()
		}
		io.WriteString(w, pid+"\n")
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		var early []byte // what net/http read ahead is the stream's
		if n := brw.Reader.Buffered(); n > 0 {
			early, _ = brw.Reader.Peek(n)
		}
		const answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: lines\r\nConnection: Upgrade\r\n\r\n"
		if tc, unread := TLSConn(nc); tc != nil { // over HTTPS: the lines are TLS's plaintext
			io.WriteString(tc, answer)
			serveLinesTLS(tc, append(append([]byte(nil), early...), unread...))
			return
		}
		c := Conn(nc)
		c.Unread(early)
		io.WriteString(c, answer)
		serveLines(c)
	})
	mux.HandleFunc("GET /tls", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, pid+" "+tlsSeen(r)+"\n")
	})
	mux.HandleFunc("GET /upgrade", upgradeHandler)
	mux.HandleFunc("GET /batch", batchHandler)
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, pid+" "+string(b)+"\n")
	})
	return mux
}

// batched counts the requests GET /batch has begun in this process.
var batched atomic.Int64

// batchHandler answers GET /batch?per=N in batches of N that the test
// allows one at a time: the k-th request (from 1) waits until the file
// batch-<(k-1)/N> exists, and the last of batch b says "batch <pid> <b>"
// once answered. A load generator's requests are so paced by the
// test's upgrades without a guessed duration.
func batchHandler(w http.ResponseWriter, r *http.Request) {
	per, err := strconv.ParseInt(r.URL.Query().Get("per"), 10, 64)
	if err != nil || per <= 0 {
		http.Error(w, "per", http.StatusBadRequest)
		return
	}
	k := batched.Add(1)
	b := (k - 1) / per
	gate := filepath.Join(filepath.Dir(os.Getenv(envEvents)), "batch-"+strconv.FormatInt(b, 10))
	for {
		if _, err := os.Stat(gate); err == nil {
			break
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(2 * time.Millisecond): // polls a state the test sets
		}
	}
	io.WriteString(w, strconv.Itoa(os.Getpid())+"\n")
	if k%per == 0 {
		w.(http.Flusher).Flush()
		event("batch %d %d", os.Getpid(), b)
	}
}

// serveLines is a hijacked connection's protocol (a WebSocket stands for
// it): each line is answered "<pid> <line>". At an upgrade it parks at a
// line boundary, as any handoff.Conn handler does, with a state that tells
// the new process's Resume it is not HTTP.
func serveLines(c *handoff.Conn) {
	pid := strconv.Itoa(os.Getpid())
	for {
		line, err := c.Next(bufio.ScanLines)
		if errors.Is(err, handoff.ErrPark) {
			if err := c.Park([]byte("lines")); err != nil {
				return // handed over (or closed)
			}
			continue
		}
		if err != nil {
			c.Close()
			return
		}
		io.WriteString(c, pid+" "+string(line)+"\n")
	}
}

func testMode() handoff.Mode {
	if os.Getenv(envRoll) != "" {
		return handoff.Rolling
	}
	return handoff.AllAtOnce
}

func serverMain() {
	srv := &http.Server{Handler: handler(), ConnContext: withConn}
	if d, err := time.ParseDuration(os.Getenv(envIdle)); err == nil {
		srv.IdleTimeout = d
	}
	if d, err := time.ParseDuration(os.Getenv(envHeader)); err == nil {
		srv.ReadHeaderTimeout = d
	}
	park := 3 * time.Second
	if d, err := time.ParseDuration(os.Getenv(envPark)); err == nil {
		park = d
	}
	hs := New(srv)
	drain := time.Minute
	if d, err := time.ParseDuration(os.Getenv(envLinger)); err == nil {
		hs.HTTP2Linger = d
		drain += d
	}
	hs.observed = func(nc net.Conn, what string, n int) {
		// "waits <pid> <client port> 0", "parks <pid> <client port> <bytes of a head>"
		event("%s %d %d %d", what, os.Getpid(), nc.RemoteAddr().(*net.TCPAddr).Port, n)
		if what == "waits" {
			asked(nc)
		}
	}
	var ts *tlshandoff.Server
	opts := handoff.Options{
		Resume: func(c *handoff.Conn, state []byte) {
			if string(state) == "lines" { // a hijacked connection, parked by serveLines
				serveLines(c)
				return
			}
			if resumeLinesTLS(ts, c, state) {
				return
			}
			hs.Resume(c, state)
		},
		Mode:        testMode(),
		NoSignal:    true,
		ParkTimeout: park,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	if os.Getenv(envTLS) != "" {
		moveTicketKeys(&opts, &ts)
	}
	up, err := handoff.New(opts)
	if err != nil {
		event("error %d %v", os.Getpid(), err)
		os.Exit(1)
	}
	testUp = up
	if _, err := os.Stat(os.Getenv(envFail)); err == nil && up.HasParent() {
		os.Exit(3) // a broken new version
	}
	var addr net.Addr
	if os.Getenv(envTLS) != "" {
		addr, err = serveTLS(hs, up, &ts)
	} else {
		addr, err = serve(hs, up)
	}
	if err != nil {
		event("error %d %v", os.Getpid(), err)
		os.Exit(1)
	}
	close(testReady)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := testtool.Upgrade(up); err != nil {
				event("failed %d %v", os.Getpid(), err)
			}
		}
	}()
	event("ready %d %s", os.Getpid(), addr)
	<-up.Exit()
	if ts != nil {
		// What stayed: HTTP/2 connections, which end with GOAWAY.
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		if err := hs.Drain(ctx); err != nil {
			event("error %d %v", os.Getpid(), err)
		}
		cancel()
	}
	event("exit %d", os.Getpid())
}

// serve serves HTTP once the process is ready.
func serve(hs *Server, up *handoff.Upgrader) (net.Addr, error) {
	ln, err := up.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		err = up.Ready(context.Background())
	}
	if err != nil {
		return nil, err
	}
	go hs.Serve(ln)
	return ln.Addr(), nil
}

// chain is the test's view of a server and its successors.
type chain struct {
	t      *testing.T
	dir    string
	events string
	used   map[int]bool // event lines await has returned
	pid    int          // the process that serves now
	addr   string
	cmd    *exec.Cmd
}

func startChain(t *testing.T, env ...string) *chain {
	t.Helper()
	dir := t.TempDir()
	h := &chain{t: t, dir: dir, events: filepath.Join(dir, "events"), used: map[int]bool{}}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command(bin, "-test.run=^$")
	h.cmd.Env = append(os.Environ(), envRole+"=server", envEvents+"="+h.events, envFail+"="+filepath.Join(dir, "fail"))
	h.cmd.Env = append(h.cmd.Env, env...)
	h.cmd.Stderr = os.Stderr
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		h.cmd.Wait()
	})
	ev := h.await("ready")
	h.pid, _ = strconv.Atoi(ev[1])
	h.addr = ev[2]
	return h
}

// await returns the first event of kind not returned before (events of
// two processes may come in either order). Waiting for "ready", an
// upgrade that failed meanwhile fails the test; "error" lines (a failing
// new process says why) only explain a timeout.
func (h *chain) await(kind string) []string {
	h.t.Helper()
	return h.awaitMatch(kind, nil)
}

// awaitConn returns the first event of kind not returned before about the
// connection c (its third field is c's port), from any process.
func (h *chain) awaitConn(kind string, c *client) []string {
	h.t.Helper()
	port := strconv.Itoa(c.nc.LocalAddr().(*net.TCPAddr).Port)
	return h.awaitMatch(kind, func(f []string) bool { return len(f) > 2 && f[2] == port })
}

func (h *chain) awaitMatch(kind string, match func([]string) bool) []string {
	h.t.Helper()
	var errs []string
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(h.events)
		errs = errs[:0]
		for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || h.used[i] {
				continue
			}
			switch {
			case f[0] == kind && (match == nil || match(f)):
				h.used[i] = true
				return f
			case f[0] == "failed" && kind == "ready":
				h.t.Fatalf("waiting for a process to serve: %s", line)
			case f[0] == "error":
				errs = append(errs, line)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatalf("no %q event in 60s; errors: %q", kind, errs)
	return nil
}

// upgrade sends SIGHUP to the serving process and waits until the new one
// serves and the old one has exited; it returns the new pid.
func (h *chain) upgrade() int {
	h.t.Helper()
	h.hup()
	return h.upgraded()
}

// hup starts an upgrade of the serving process, for a test that acts on
// its connections before it waits for the outcome (upgraded, or await
// "failed").
func (h *chain) hup() {
	h.t.Helper()
	if err := syscall.Kill(h.pid, syscall.SIGHUP); err != nil {
		h.t.Fatal(err)
	}
}

// upgraded waits until a new process serves and the old one has exited
// (the upgrade committed and, in Rolling mode, every connection moved); it
// returns the new pid.
func (h *chain) upgraded() int {
	h.t.Helper()
	ev := h.await("ready")
	h.pid, _ = strconv.Atoi(ev[1])
	h.await("exit")
	return h.pid
}

// fifo makes a named pipe for GET /hold?name=name in the servers'
// directory; release (closing its writer) lets the held request finish.
func (h *chain) fifo(name string) (release func()) {
	h.t.Helper()
	path := filepath.Join(h.dir, name)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		h.t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			// O_RDWR never blocks on a FIFO; the reader sees EOF once this
			// closes (it has opened by then: the test waited for "holding").
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err == nil {
				f.Close()
			}
		})
	}
	h.t.Cleanup(release)
	return release
}

// awaitServerRead waits until the server side of c has read every byte c
// sent (its receive queue in /proc/net/tcp is empty): the bytes are in the
// server process, not in the kernel.
func (h *chain) awaitServerRead(c *client) {
	h.t.Helper()
	local := procAddr(c.nc.RemoteAddr().(*net.TCPAddr))
	remote := procAddr(c.nc.LocalAddr().(*net.TCPAddr))
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			h.t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && f[1] == local && f[2] == remote {
				if q := strings.SplitN(f[4], ":", 2); len(q) == 2 && strings.Trim(q[1], "0") == "" {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the server did not read what %s sent in 20s", c.nc.LocalAddr())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// procAddr is a loopback IPv4 address as /proc/net/tcp writes it.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}

// client is one keep-alive connection, never redialled.
type client struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func (h *chain) dial() *client {
	h.t.Helper()
	nc, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { nc.Close() })
	return &client{t: h.t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, raw); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// response reads one response and returns its status and body.
func (c *client) response() (int, string, error) {
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// get sends GET path and returns the pid that answered 200.
func (c *client) get(path string) int {
	c.t.Helper()
	c.send("GET " + path + " HTTP/1.1\r\nHost: t\r\n\r\n")
	return c.expectOK()
}

// requireMovedTo fails unless the connection's next request is answered
// by pid, the process an upgrade moved it to.
func (c *client) requireMovedTo(pid int) {
	c.t.Helper()
	if got := c.get("/"); got != pid {
		c.t.Fatalf("answered by %d, want the new process %d", got, pid)
	}
}

func (c *client) expectOK() int {
	c.t.Helper()
	status, body, err := c.response()
	if err != nil || status != http.StatusOK {
		c.t.Fatalf("response: status %d, body %q, err %v", status, body, err)
	}
	pid, err := strconv.Atoi(strings.Fields(body)[0])
	if err != nil {
		c.t.Fatalf("body %q names no pid", body)
	}
	return pid
}
