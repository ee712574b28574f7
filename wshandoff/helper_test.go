//go:build linux

package wshandoff

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
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
	"syscall"
	"testing"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/httphandoff"
	"github.com/handoff-dev/handoff/internal/testcert"
	"github.com/handoff-dev/handoff/internal/testtool"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// The test binary doubles as the WebSocket server under test (TestMain
// runs serverMain when envRole says so), written with the library envLib
// names; every process of an upgrade chain is one. It says in the events
// file "ready <pid> <addr>" once it serves, "handshake <pid> <port>" for
// each opening handshake it answers, "waits <pid> <port>" for a
// connection asked to park inside a message, "parks <pid> <port>" as a
// connection parks, "rejects <pid>" when it fails an upgrade on purpose
// (envFail), "started <pid>" as a process an upgrade started begins,
// "tls <pid>" for each TLS handshake (serving wss), and "exit <pid>".
const (
	envRole   = "WSHANDOFF_TEST_ROLE"
	envEvents = "WSHANDOFF_TEST_EVENTS"
	envLib    = "WSHANDOFF_TEST_LIB"  // gorilla or coder
	envFail   = "WSHANDOFF_TEST_FAIL" // a file: while it exists, a new process rejects the state
	envCert   = "WSHANDOFF_TEST_CERT" // if set, serve wss with this certificate (PEM file) and envKey
	envKey    = "WSHANDOFF_TEST_KEY"
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

func port(a net.Addr) int { return a.(*net.TCPAddr).Port }

// The server answers each message m with "<pid> <n> m", n counting the
// messages of the connection: the count is its state, which moves with
// it, so a reply tells both which process answered and that nothing was
// answered twice or skipped.
func reply(n int64, msg []byte) []byte { return fmt.Appendf(nil, "%d %d %s", os.Getpid(), n, msg) }

func countState(n *int64) func() []byte {
	return func() []byte { return strconv.AppendInt(nil, *n, 10) }
}

func serveGorilla(ws *websocket.Conn, n int64) {
	OnPark(ws, countState(&n)) // called inside ReadMessage, on this goroutine
	// gorilla's default ping handler gives its pong 1 s and drops it
	// without a word past that (a timeout is a temporary error); on this
	// shared machine under -race, with a thousand connections resuming at
	// once after an upgrade, that happened (a pong missing, once a
	// connection reset: the late write is fatal). A pong that cannot go
	// ends the connection here, with an "ended" event that says why.
	ws.SetPingHandler(func(p string) error {
		return ws.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(time.Minute))
	})
	for {
		typ, msg, err := ws.ReadMessage()
		if err == nil {
			n++
			err = ws.WriteMessage(typ, reply(n, msg))
		}
		if err != nil {
			ended(port(ws.RemoteAddr()), err)
			ws.Close() // after a handover this does nothing
			return
		}
	}
}

// ended says, for a test's failure to explain, why a connection ended in
// this process other than by a handover.
func ended(port int, err error) {
	if !errors.Is(err, handoff.ErrHandedOver) {
		event("ended %d %d %v", os.Getpid(), port, err)
	}
}

func serveCoder(ws *cws.Conn, rport int, n int64) {
	OnParkCoder(ws, countState(&n))
	ctx := context.Background()
	for {
		typ, msg, err := ws.Read(ctx)
		if err == nil {
			n++
			err = ws.Write(ctx, typ, reply(n, msg))
		}
		if err != nil {
			ended(rport, err)
			ws.CloseNow()
			return
		}
	}
}

func serverMain() {
	pid := os.Getpid()
	lib := os.Getenv(envLib)
	observe = func(c *Conn, what string) {
		event("%s %d %d", what, pid, port(c.RemoteAddr()))
	}
	// Both offer permessage-deflate, context takeover included: a client
	// that offers it too gets it without context takeover (see
	// TestCompression); the others get none.
	gu := &Upgrader{}
	gu.EnableCompression = true
	copts := &cws.AcceptOptions{CompressionMode: cws.CompressionContextTakeover}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		switch lib {
		case "gorilla":
			ws, err := gu.Upgrade(w, r, nil)
			if err != nil {
				event("error %d %v", pid, err)
				return
			}
			event("handshake %d %d", pid, port(ws.RemoteAddr()))
			serveGorilla(ws, 0)
		case "coder":
			ws, err := Accept(w, r, copts)
			if err != nil {
				event("error %d %v", pid, err)
				return
			}
			rport, _ := strconv.Atoi(strings.TrimPrefix(r.RemoteAddr, "127.0.0.1:"))
			event("handshake %d %d", pid, rport)
			serveCoder(ws, rport, 0)
		}
	})
	hs := httphandoff.New(&http.Server{Handler: mux})
	var ts *tlshandoff.Server // serving wss: the new process's, made before Ready
	resume := func(c *handoff.Conn, state []byte) {
		if !IsWebSocket(state) {
			hs.Resume(c, state)
			return
		}
		var app []byte
		var err error
		switch lib {
		case "gorilla":
			var ws *websocket.Conn
			if ws, app, err = gu.ResumeTLS(ts, c, state); err == nil {
				n, _ := strconv.ParseInt(string(app), 10, 64)
				serveGorilla(ws, n)
			}
		case "coder":
			var ws *cws.Conn
			if ws, app, err = ResumeCoderTLS(ts, c, state, nil); err == nil {
				n, _ := strconv.ParseInt(string(app), 10, 64)
				serveCoder(ws, port(c.RemoteAddr()), n)
			}
		}
		if err != nil {
			event("error %d resume: %v", pid, err)
		}
	}
	up, err := handoff.New(handoff.Options{
		Resume: resume,
		// The state is a marker; a new process started while the test's
		// fail file exists rejects it, once every connection has parked
		// (SaveState runs then), and the upgrade rolls back.
		SaveState: func(w io.Writer) error { _, err := io.WriteString(w, "wshandoff-test"); return err },
		LoadState: func(r io.Reader) error {
			if _, err := os.Stat(os.Getenv(envFail)); err == nil {
				event("rejects %d", pid)
				return errors.New("the test's fail file exists")
			}
			_, err := io.Copy(io.Discard, r)
			return err
		},
		NoSignal:       true,
		ParkTimeout:    60 * time.Second, // the test finishes the messages in flight
		PauseTimeout:   90 * time.Second,
		UpgradeTimeout: 120 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		event("error %d %v", pid, err)
		os.Exit(1)
	}
	if up.HasParent() {
		event("started %d", pid)
	}
	var ln net.Listener
	if os.Getenv(envCert) != "" {
		ts, err = serveTLS(hs, up)
		if err == nil {
			ln, err = up.ListenPlain("tcp", "127.0.0.1:0")
		}
	} else {
		ln, err = up.Listen("tcp", "127.0.0.1:0")
	}
	if err == nil {
		err = up.Ready(context.Background())
	}
	if err != nil {
		event("error %d %v", pid, err)
		os.Exit(1)
	}
	if ts != nil {
		go hs.ServeTLS(ln)
	} else {
		go hs.Serve(ln.(*handoff.Listener))
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := testtool.Upgrade(up); err != nil {
				event("failed %d %v", pid, err)
			}
		}
	}()
	event("ready %d %s", pid, ln.Addr())
	<-up.Exit()
	event("exit %d", pid)
}

// serveTLS makes hs serve HTTPS with the test's certificate; every TLS
// handshake it completes says "tls <pid>".
func serveTLS(hs *httphandoff.Server, up *handoff.Upgrader) (*tlshandoff.Server, error) {
	pair, err := tls.LoadX509KeyPair(os.Getenv(envCert), os.Getenv(envKey))
	if err != nil {
		return nil, err
	}
	pid := os.Getpid()
	return hs.TLS(&tls.Config{
		Certificates: []tls.Certificate{pair},
		VerifyConnection: func(tls.ConnectionState) error {
			event("tls %d", pid)
			return nil
		},
	}, tlshandoff.Options{Upgrader: up})
}

// chain is the test's view of a server and its successors.
type chain struct {
	t      *testing.T
	lib    string // the servers' library
	tls    bool   // they serve wss: each says "tls" for every TLS handshake
	events string
	fail   string       // while this file exists, a new process fails
	used   map[int]bool // event lines await has returned
	pid    int          // the process that serves now
	addr   string
}

func startChain(t *testing.T, lib string) *chain { return startChainEnv(t, lib) }

// startChainTLS starts a chain that serves wss, and returns the pool
// that trusts its certificate.
func startChainTLS(t *testing.T, lib string) (*chain, *x509.CertPool) {
	t.Helper()
	cert, key, err := testcert.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in " + cert)
	}
	h := startChainEnv(t, lib, envCert+"="+cert, envKey+"="+key)
	h.tls = true
	return h, pool
}

// startChainEnv starts a chain whose servers have env besides.
func startChainEnv(t *testing.T, lib string, env ...string) *chain {
	t.Helper()
	dir := t.TempDir()
	h := &chain{t: t, lib: lib, events: filepath.Join(dir, "events"), fail: filepath.Join(dir, "fail"), used: map[int]bool{}}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=server", envEvents+"="+h.events, envLib+"="+lib, envFail+"="+h.fail)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			h.explain()
		}
	})
	ev := h.await("ready", nil)
	h.pid, _ = strconv.Atoi(ev[1])
	h.addr = ev[2]
	return h
}

// await returns the first event of kind (matching match, if set) not
// returned before. Waiting for "ready", an upgrade that failed meanwhile
// fails the test; "error" lines only explain a timeout.
func (h *chain) await(kind string, match func([]string) bool) []string {
	h.t.Helper()
	var errs []string
	deadline := time.Now().Add(120 * time.Second)
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
	h.t.Fatalf("no %q event in 120s; errors: %q", kind, errs)
	return nil
}

// explain logs the events that tell why connections ended or upgrades
// failed, for a failed test.
func (h *chain) explain() {
	b, _ := os.ReadFile(h.events)
	for _, line := range strings.Split(string(b), "\n") {
		switch kind, _, _ := strings.Cut(line, " "); kind {
		case "error", "ended", "failed", "rejects", "started", "ready", "exit":
			h.t.Log(line)
		}
	}
}

// checkHandshakes fails the test unless the servers answered one opening
// handshake, and for wss one TLS handshake, per connection: none
// reconnected, none negotiated TLS again.
func (h *chain) checkHandshakes(conns int) {
	h.t.Helper()
	if n := h.count("handshake"); n != conns {
		h.t.Fatalf("%d WebSocket handshakes for %d connections: some reconnected", n, conns)
	}
	if n := h.count("tls"); h.tls && n != conns {
		h.t.Fatalf("%d TLS handshakes for %d connections", n, conns)
	}
}

// count returns how many events of kind the file holds.
func (h *chain) count(kind string) int {
	b, _ := os.ReadFile(h.events)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == kind {
			n++
		}
	}
	return n
}

// hup starts an upgrade of the serving process.
func (h *chain) hup() {
	h.t.Helper()
	if err := syscall.Kill(h.pid, syscall.SIGHUP); err != nil {
		h.t.Fatal(err)
	}
}

// upgraded waits until a new process serves and the old one has exited;
// it returns the new pid.
func (h *chain) upgraded() int {
	h.t.Helper()
	ev := h.await("ready", nil)
	h.pid, _ = strconv.Atoi(ev[1])
	h.await("exit", nil)
	return h.pid
}

// awaitServerRead waits until the server has read every byte the
// connections (given by their local ports) sent: their receive queues in
// /proc/net/tcp are empty, the bytes are in the server process.
func (h *chain) awaitServerRead(ports []int) {
	h.t.Helper()
	server := port(mustAddr(h.t, h.addr))
	want := map[string]bool{}
	for _, p := range ports {
		want[fmt.Sprintf("%04X", p)] = true
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			h.t.Fatal(err)
		}
		left := 0
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 5 || !strings.HasSuffix(f[1], fmt.Sprintf(":%04X", server)) {
				continue
			}
			_, rport, _ := strings.Cut(f[2], ":")
			if q := strings.SplitN(f[4], ":", 2); want[rport] && len(q) == 2 && strings.Trim(q[1], "0") != "" {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the server did not read what %d connections sent in 60s", left)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func mustAddr(t *testing.T, s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
