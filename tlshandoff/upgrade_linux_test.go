//go:build linux

package tlshandoff

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chain is the test's view of the echo server and its successors.
type chain struct {
	t      *testing.T
	events string
	seen   map[int]bool // event lines await has returned
	pid    int          // the process that serves now
	addr   string
}

func startChain(t *testing.T, env ...string) *chain {
	t.Helper()
	h := &chain{t: t, events: filepath.Join(t.TempDir(), "events"), seen: map[int]bool{}}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=server", envEvents+"="+h.events, envCert+"="+certEnv(t))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	ev := h.await("ready", nil)
	h.pid, _ = strconv.Atoi(ev[1])
	h.addr = ev[2]
	return h
}

// await returns the first event of kind, matching match if set, not
// returned before. The events file is the servers' word: it is read
// again until the event is there (an upgrade failing meanwhile fails the
// test at once).
func (h *chain) await(kind string, match func([]string) bool) []string {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(h.events)
		for i, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) == 0 || h.seen[i]:
			case f[0] == kind && (match == nil || match(f)):
				h.seen[i] = true
				return f
			case f[0] == "failed" || f[0] == "error":
				h.t.Fatalf("waiting for %q: %s", kind, line)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatalf("no %q event in 60s", kind)
	return nil
}

// count returns how many events of kind the servers wrote.
func (h *chain) count(kind string) int {
	b, _ := os.ReadFile(h.events)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, kind+" ") {
			n++
		}
	}
	return n
}

// upgrade sends SIGHUP to the serving process and waits until the new one
// serves; it returns the old pid, which may still drain.
func (h *chain) upgrade() (old int) {
	h.t.Helper()
	old = h.pid
	if err := syscall.Kill(h.pid, syscall.SIGHUP); err != nil {
		h.t.Fatal(err)
	}
	ev := h.await("ready", nil)
	h.pid, _ = strconv.Atoi(ev[1])
	return old
}

// exited waits for pid's exit event and returns how many connections
// it served to their end, unable to move them.
func (h *chain) exited(pid int) int {
	h.t.Helper()
	ev := h.await("exit", func(f []string) bool { return f[1] == strconv.Itoa(pid) })
	n, _ := strconv.Atoi(ev[2])
	return n
}

// echoClient is one TLS connection to the echo server, never redialled.
type echoClient struct {
	t *testing.T
	c *tls.Conn
	r *bufio.Reader
}

func (h *chain) dialTLS(cfg *tls.Config) *echoClient {
	h.t.Helper()
	c, err := tls.Dial("tcp", h.addr, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return &echoClient{t: h.t, c: c, r: bufio.NewReader(c)}
}

func (e *echoClient) port() string {
	return strconv.Itoa(e.c.LocalAddr().(*net.TCPAddr).Port)
}

// ask sends line and returns the pid that answered it.
func (e *echoClient) ask(line string) int {
	e.t.Helper()
	if _, err := e.c.Write([]byte(line + "\n")); err != nil {
		e.t.Fatalf("write: %v", err)
	}
	e.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := e.r.ReadString('\n')
	pid, echoed, _ := strings.Cut(strings.TrimSuffix(got, "\n"), " ")
	if err != nil || echoed != line {
		e.t.Fatalf("answer %q, %v; want <pid> %s", got, err, line)
	}
	n, _ := strconv.Atoi(pid)
	return n
}

// expectHandshake waits for the server's word on e's handshake.
func (h *chain) expectHandshake(e *echoClient, movable bool) {
	h.t.Helper()
	ev := h.await("handshake", func(f []string) bool { return f[2] == e.port() })
	if ev[3] != strconv.FormatBool(movable) {
		h.t.Fatalf("connection %s: movable %s, want %v", e.port(), ev[3], movable)
	}
}

// TestEchoAcrossUpgrades: Go's client, on TLS 1.3 and on TLS 1.2 with
// each kind of suite, keeps one TLS connection across 10 upgrades (in
// both modes), with a KeyUpdate asked for by the server in between; a
// connection that cannot move (TLS 1.2 CBC) is served by the old process
// until it closes and counted as drained; the servers count one
// handshake per connection; and a session ticket from the first process
// resumes in the last, on TLS 1.3 and 1.2, and that connection moves too.
func TestEchoAcrossUpgrades(t *testing.T) {
	for _, mode := range []string{"all-at-once", "rolling"} {
		t.Run(mode, func(t *testing.T) {
			var env []string
			if mode == "rolling" {
				env = append(env, envRoll+"=1")
			}
			h := startChain(t, env...)
			moving, cfgs := h.dialMovable()
			stuck := h.dialTLS(goClient(t, tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA))
			stuck.ask("hello")
			h.expectHandshake(stuck, false)
			for i := range 10 {
				if i == 4 {
					moving[0].ask("keyupdate") // before this upgrade; the client's answer comes after
				}
				old := h.upgrade()
				ev := h.await("tlsupgrade", func(f []string) bool { return f[1] == strconv.Itoa(old) })
				if want := fmt.Sprint(len(moving), " ", btoi(i == 0)); ev[2]+" "+ev[3] != want {
					t.Fatalf("upgrade %d: the old process logged move, stay = %s %s, want %s", i, ev[2], ev[3], want)
				}
				if i == 0 {
					if pid := stuck.ask("still here"); pid != old {
						t.Fatalf("the connection that cannot move was answered by %d, not by %d", pid, old)
					}
					stuck.c.Close()
				}
				if drained := h.exited(old); drained != btoi(i == 0) {
					t.Fatalf("upgrade %d: %d connections drained", i, drained)
				}
				for _, e := range moving {
					if pid := e.ask("after " + strconv.Itoa(i)); pid != h.pid {
						t.Fatalf("upgrade %d: answered by %d, want %d", i, pid, h.pid)
					}
				}
			}
			if n := h.count("keyupdate"); n != 1 {
				t.Fatalf("%d key updates, want 1", n)
			}
			if n := h.count("handshake"); n != len(moving)+1 {
				t.Fatalf("%d handshakes for %d connections", n, len(moving)+1)
			}
			var resumed []*echoClient
			for _, cfg := range cfgs {
				e := h.dialTLS(cfg)
				e.ask("resumed")
				if !e.c.ConnectionState().DidResume {
					t.Fatalf("%s: a ticket of the first process did not resume in the last", tls.CipherSuiteName(e.c.ConnectionState().CipherSuite))
				}
				h.expectHandshake(e, true)
				resumed = append(resumed, e)
			}
			if drained := h.exited(h.upgrade()); drained != 0 {
				t.Fatalf("%d resumed connections could not move", drained)
			}
			for _, e := range resumed {
				if pid := e.ask("resumed and moved"); pid != h.pid {
					t.Fatalf("a resumed connection was answered by %d, want %d", pid, h.pid)
				}
			}
		})
	}
}

// dialMovable connects Go's client on TLS 1.3 (crypto/tls lets no client
// choose a TLS 1.3 suite: the server's choice) and on TLS 1.2 with every
// suite this package moves, ECDSA and RSA, each with a session cache of
// its own (a ticket names its suite).
func (h *chain) dialMovable() (moving []*echoClient, cfgs []*tls.Config) {
	h.t.Helper()
	for _, suite := range []uint16{0,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256} {
		version := uint16(tls.VersionTLS12)
		if suite == 0 {
			version = tls.VersionTLS13
		}
		cfg := goClient(h.t, version, suite)
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		cfgs = append(cfgs, cfg)
		e := h.dialTLS(cfg)
		if pid := e.ask("hello"); pid != h.pid {
			h.t.Fatalf("answered by %d, want %d", pid, h.pid)
		}
		h.expectHandshake(e, true)
		moving = append(moving, e)
	}
	return moving, cfgs
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
