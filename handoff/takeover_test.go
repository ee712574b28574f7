//go:build linux

package handoff

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Takeover by a peer (Options.TakeoverSocket): a process the serving one
// did not start connects to its takeover socket and takes over, as a
// container of a pod started from a new image does. In one process, the
// peer is a server of the in-process chain with no old process; across
// processes, the test binary started again by the test, not by the server.

// takeoverEnv is the environment of a chain whose servers take over
// through a takeover socket in dir.
func takeoverEnv(dir string) []string {
	return []string{envTakeover + "=" + filepath.Join(dir, "takeover", "handoff.sock")}
}

// peer starts a server that nobody in the chain started: it finds the
// takeover socket in New and takes over from the one that serves.
func (h *harness) peer() (int, string) {
	h.t.Helper()
	if h.fake != nil {
		h.fake.spawn(0, nil, -1)
	} else {
		cmd := testCommand(h, "server")
		cmd.SysProcAttr = nil // its own process: not in the chain's group
		if err := cmd.Start(); err != nil {
			h.t.Fatal(err)
		}
		h.seen.Store(cmd.Process.Pid, true)
		go cmd.Wait()
	}
	return h.awaitPeer()
}

// awaitPeer waits for a peer's takeover to end: the peer ready and the
// old process exited, or the peer's error (the old one serves on).
func (h *harness) awaitPeer() (int, string) {
	h.t.Helper()
	var ready, exited int
	for ready == 0 || exited == 0 {
		ev := h.next()
		switch ev[0] {
		case "error":
			return 0, strings.Join(ev, " ")
		case "ready":
			ready = atoi(ev[1])
		case "exit":
			if exited = atoi(ev[1]); exited != h.pid {
				h.t.Fatalf("pid %d exited, expected old pid %d", exited, h.pid)
			}
			h.exit = ev
		}
	}
	h.pid = ready
	return ready, ""
}

// socketWatch dials the takeover socket over and over until stopped,
// counting the dials nobody answered: the socket must never stop
// answering, or a process starting then would take itself for the first.
type socketWatch struct {
	path          string
	dials, missed atomic.Int64
	last          atomic.Value
	stopC         chan struct{}
	wg            sync.WaitGroup
}

func watchSocket(path string) *socketWatch {
	w := &socketWatch{path: path, stopC: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.stopC:
				return
			case <-time.After(2 * time.Millisecond): // a pace, not a wait for a state
			}
			c, err := dialTakeover(path)
			w.dials.Add(1)
			if err != nil {
				w.missed.Add(1)
				w.last.Store(err.Error())
				continue
			}
			c.Close()
		}
	}()
	return w
}

func (w *socketWatch) stop(t *testing.T) {
	t.Helper()
	close(w.stopC)
	w.wg.Wait()
	if w.dials.Load() == 0 || w.missed.Load() > 0 {
		t.Errorf("takeover socket: %d of %d dials unanswered (last: %v)", w.missed.Load(), w.dials.Load(), w.last.Load())
	}
}

// TestPeerTakesOver: peers take over one after another under load, with
// an exec'd upgrade among them: every connection is served by every
// server of the chain, no request is lost or repeated, and the takeover
// socket answers throughout.
func TestPeerTakesOver(t *testing.T) {
	for name, start := range chains {
		t.Run(name, func(t *testing.T) { testPeerTakesOver(t, start) })
	}
}

// chains starts a chain in one process or in processes of their own.
var chains = map[string]func(*testing.T, ...string) *harness{
	"one process": startInProcess,
	"processes":   startServer,
}

func testPeerTakesOver(t *testing.T, start func(*testing.T, ...string) *harness) {
	dir := t.TempDir()
	h := start(t, takeoverEnv(dir)...)
	path := filepath.Join(dir, "takeover", "handoff.sock")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("takeover socket: %v, %v; want a socket of mode 0600", fi, err)
	}
	w := watchSocket(path)
	l := startLoad(t, h.addr, 30)
	l.waitRounds(100)
	pids := []int{h.pid}
	for i, how := range []string{"peer", "peer", "exec", "peer"} {
		var p int
		var fail string
		if how == "peer" {
			p, fail = h.peer()
		} else {
			p, fail = h.upgrade()
		}
		if p == 0 {
			t.Fatalf("takeover %d (%s): %s", i, how, fail)
		}
		l.waitServedBy(p)
		pids = append(pids, p)
	}
	l.stop()
	l.requireAllOn(pids...)
	w.stop(t)
	if !h.logs.waitFor("handoff: taking over from a peer", time.Second) {
		t.Error("no peer said it took over from a peer")
	}
}

// TestTakeoverSocketStale: a socket file a dead process left is replaced
// by the first process; a file that is no socket is refused, never
// removed.
func TestTakeoverSocketStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "takeover", "handoff.sock")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody listens: a crash's leftover
	if _, err := dialTakeover(path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial of the leftover: %v, want ECONNREFUSED", err)
	}
	got, err := listenFresh(path, processEnv)
	if err != nil {
		t.Fatalf("first process over a stale socket: %v", err)
	}
	defer got.Close()
	if c, err := dialTakeover(path); err != nil {
		t.Fatalf("the new socket does not answer: %v", err)
	} else {
		c.Close()
	}
	plain := filepath.Join(dir, "takeover", "file")
	if err := os.WriteFile(plain, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenFresh(plain, processEnv); err == nil {
		t.Fatal("a regular file at the takeover path was taken for a socket")
	}
	if _, err := os.Stat(plain); err != nil {
		t.Fatalf("the regular file was removed: %v", err)
	}
}

// TestTakeoverFromEnv: the variables set the options; a wrong uid, a
// bad duration fail at the start.
func TestTakeoverFromEnv(t *testing.T) {
	t.Setenv(EnvTakeoverSocket, "/run/handoff/takeover/handoff.sock")
	t.Setenv(EnvTakeoverTokenFile, "/etc/handoff/token")
	t.Setenv(EnvTakeoverTimeout, "7s")
	t.Setenv(EnvTakeoverUID, strconv.Itoa(os.Getuid()))
	var o Options
	if err := TakeoverFromEnv(&o); err != nil || o.TakeoverSocket != "/run/handoff/takeover/handoff.sock" ||
		o.TakeoverTokenFile != "/etc/handoff/token" || o.UpgradeTimeout != 7*time.Second {
		t.Fatalf("%+v, %v", o, err)
	}
	for k, v := range map[string]string{EnvTakeoverUID: strconv.Itoa(os.Getuid() + 1), EnvTakeoverTimeout: "soon"} {
		t.Run(k, func(t *testing.T) {
			t.Setenv(k, v)
			if err := TakeoverFromEnv(&Options{}); err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("%s=%s: %v, want an error naming it", k, v, err)
			}
		})
	}
}
