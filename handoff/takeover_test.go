//go:build linux

package handoff

import (
	"errors"
	"fmt"
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
func (h *harness) peer(env ...string) (int, string) {
	h.t.Helper()
	h.startPeer(env...)
	return h.awaitPeer()
}

// startPeer starts a peer with env added to the chain's, and returns its
// pid.
func (h *harness) startPeer(env ...string) int {
	env = append(env, envPeer+"=1")
	if h.fake != nil {
		return h.fake.spawn(0, nil, -1, env...).pid
	}
	cmd := testCommand(h, "server")
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = nil // its own process: not in the chain's group
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.seen.Store(cmd.Process.Pid, true)
	go cmd.Wait()
	return cmd.Process.Pid
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
			c, err := dialPacket(path)
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
	if _, err := dialPacket(path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial of the leftover: %v, want ECONNREFUSED", err)
	}
	got, err := listenFresh(path, processEnv)
	if err != nil {
		t.Fatalf("first process over a stale socket: %v", err)
	}
	defer got.Close()
	if c, err := dialPacket(path); err != nil {
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

// TestPeerRefused: a peer that may not take over, or fails to, leaves
// the serving process as it was: every connection served on, and the
// next peer takes over. The peer's New or Ready fails and says why; the
// old process logs the refusal, or the rollback with its cause. No kill:
// the old process never signals a peer.
func TestPeerRefused(t *testing.T) {
	for _, c := range []struct {
		name, fault string
		peerSays    string // in the peer's error
		oldSays     string // in the old process's log
	}{
		{name: "token", peerSays: "token", oldSays: "takeover token is not this process's"},
		{name: "other app", fault: "other-app", peerSays: "rejected by peer", oldSays: "cause=other_app"},
		{name: "state rejected", fault: "reject-state", peerSays: "state rejected on purpose", oldSays: "cause=rejected"},
		{name: "peer dies", fault: "exit:load", oldSays: "cause=exited"},
		{name: "peer hangs", fault: "hang:state", oldSays: "cause=timeout"},
	} {
		for chain, start := range chains {
			t.Run(c.name+"/"+chain, func(t *testing.T) {
				testPeerRefused(t, start, c.fault, c.peerSays, c.oldSays)
			})
		}
	}
}

func testPeerRefused(t *testing.T, start func(*testing.T, ...string) *harness, fault, peerSays, oldSays string) {
	dir := t.TempDir()
	token := writeToken(t, dir, "mine", "s3cret\n")
	env := append(takeoverEnv(dir), envTakeoverToken+"="+token, envUpgradeTimeout+"=3s")
	h := start(t, env...)
	l := startLoad(t, h.addr, 20)
	l.waitRounds(50)
	old := h.pid
	h.setFault(fault)
	var peerEnv []string
	if fault == "" {
		peerEnv = []string{envTakeoverToken + "=" + writeToken(t, dir, "theirs", "guess")}
	}
	h.startPeer(peerEnv...)
	if peerSays != "" {
		if p, fail := h.awaitPeer(); p != 0 || !strings.Contains(fail, peerSays) {
			t.Fatalf("peer: pid %d, %q; want it refused saying %q", p, fail, peerSays)
		}
	}
	if !h.logs.waitFor(oldSays, 60*time.Second) {
		t.Fatalf("the old process never said %q", oldSays)
	}
	h.setFault("")
	l.waitRounds(50)
	p, fail := h.peer()
	if p == 0 {
		t.Fatalf("the next peer: %s", fail)
	}
	l.waitServedBy(p)
	l.stop()
	l.requireAllOn(old, p)
}

func writeToken(t *testing.T, dir, name, token string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTwoPeersAtOnce: two peers come together. One takes over; the other
// is told BUSY while it does, asks again, and takes over from the first
// (no process that has not taken over accepts on the socket):
// the chain goes old, one peer, the other, with every connection served
// by all three.
func TestTwoPeersAtOnce(t *testing.T) {
	for chain, start := range chains {
		t.Run(chain, func(t *testing.T) {
			dir := t.TempDir()
			h := start(t, takeoverEnv(dir)...)
			l := startLoad(t, h.addr, 20)
			l.waitRounds(50)
			old := h.pid
			// The first holds its takeover at LoadState until the second
			// has been told BUSY.
			h.startPeer(envPause + "=state")
			h.awaitPaused("state")
			h.startPeer()
			if !h.logs.waitFor("handoff: the serving process is busy; asking again", 60*time.Second) {
				t.Fatal("the second peer was never told BUSY")
			}
			h.release("state")
			var ready, exited []int
			for len(ready) < 2 || len(exited) < 2 {
				ev := h.next()
				switch ev[0] {
				case "ready":
					ready = append(ready, atoi(ev[1]))
				case "exit":
					exited = append(exited, atoi(ev[1]))
				case "error":
					t.Fatalf("a peer failed: %v", ev)
				}
			}
			if exited[0] != old || exited[1] != ready[0] {
				t.Fatalf("ready %v, exited %v: want %d, then the first peer ready, to exit", ready, exited, old)
			}
			l.waitServedBy(ready[1])
			l.stop()
			l.requireAllOn(old, ready[0], ready[1])
		})
	}
}

// TestPeerRolling: Rolling mode over the peer transport. The channel is
// the peer's lifeline: its end before END means the peer died, and the
// old process takes the listeners back, as from a child; a peer that is
// alive but breaks the move (garbage on the channel) keeps what moved
// and the listeners, the old process keeping the rest: never both
// accepting, and no request lost.
func TestPeerRolling(t *testing.T) {
	t.Run("moves", func(t *testing.T) {
		h := startInProcess(t, append(takeoverEnv(t.TempDir()), envRolling+"=1")...)
		l := startLoad(t, h.addr, 100)
		pids := []int{h.pid}
		for i := 0; i < 2; i++ {
			l.waitRounds(200)
			p, fail := h.peer()
			if p == 0 {
				t.Fatalf("takeover %d: %s", i, fail)
			}
			pids = append(pids, p)
			l.waitServedBy(p)
		}
		l.stop()
		l.requireAllOn(pids...)
	})
	t.Run("peer dies", func(t *testing.T) {
		h := startInProcess(t, append(takeoverEnv(t.TempDir()), envRolling+"=1")...)
		old := h.pid
		_, answer := heldRequest(t, h, "slow") // keeps the move open until the peer has died
		l := startLoad(t, h.addr, 50)
		l.waitRounds(100)
		h.setFault("exit:move")
		h.startPeer()
		h.stopLogged("failed during the rolling move")
		h.release("hold-slow")
		if got := <-answer; got != strconv.Itoa(old) {
			t.Fatalf("held request answered by %q, want the old process %d", got, old)
		}
		fresh := dialConn(t, h.addr)
		if err := fresh.round(2, false); err != nil || !fresh.pids[strconv.Itoa(old)] {
			t.Fatalf("new connection after the take-back: %v, served by %v", err, fresh.pids)
		}
		l.halt() // the connections that had moved died with the peer
	})
	t.Run("peer breaks the move", func(t *testing.T) {
		h := startInProcess(t, append(takeoverEnv(t.TempDir()), envRolling+"=1")...)
		old := h.pid
		// A request held in the old process keeps the move open until the
		// peer has broken it.
		_, answer := heldRequest(t, h, "slow")
		l := startLoad(t, h.addr, 50)
		l.waitRounds(100)
		h.setFault("garbage:move")
		h.startPeer()
		ready := atoi(h.expect("ready")[1])
		h.stopLogged("the rolling move to the peer broke")
		h.release("hold-slow")
		if got := <-answer; got != strconv.Itoa(old) {
			t.Fatalf("held request answered by %q, want the old process %d, which kept it", got, old)
		}
		for i := 0; i < 20; i++ {
			fresh := dialConn(t, h.addr)
			if err := fresh.round(1, false); err != nil || len(fresh.pids) != 1 || !fresh.pids[strconv.Itoa(ready)] {
				t.Fatalf("new connection %d after the broken move: %v, served by %v; want the peer %d alone",
					i, err, fresh.pids, ready)
			}
			fresh.c.Close()
		}
		l.waitRounds(100)
		l.stop() // every request answered: by the peer, or by the old process for those it kept
		l.requireAllOn(old)
	})
}

// TestStopAfterPeerCommit: a stop sent to the old process after a peer
// has taken over is its own (the kubelet stopping the idle container):
// unlike a child, a peer is not signalled, and serves on; a stop sent to
// the peer stops the service and saves its state.
func TestStopAfterPeerCommit(t *testing.T) {
	for chain, start := range chains {
		t.Run(chain, func(t *testing.T) {
			h := start(t, append(takeoverEnv(t.TempDir()), envPause+"=linger")...)
			old := h.pid
			l := startLoad(t, h.addr, 10)
			l.waitRounds(30)
			p, fail := h.peer()
			if p == 0 {
				t.Fatal(fail)
			}
			h.awaitPaused("linger") // handed over, not exited
			if err := h.kill(old, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			l.waitRounds(30)
			if !h.alive(p) || strings.Contains(h.logs.String(), "stop passed on") {
				t.Fatalf("peer %d alive: %t; the old process's stop reached it:\n%s", p, h.alive(p), h.logs.String())
			}
			l.waitServedBy(p)
			l.halt()
			if err := h.kill(p, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			for {
				if f := h.next(); f[0] == "saved" {
					if atoi(f[1]) != p {
						t.Fatalf("%v: want the peer %d to save", f, p)
					}
					break
				}
			}
		})
	}
}

// TestControlThroughPeerTakeover: each process answers its own control
// socket at every step of a takeover by a peer, as a pod's probes ask
// each container's (kubernetes/): the peer from New on, starting while it
// takes over, then serving; the old one serving, upgrading, then
// handed-over for as long as it lives on idle, refusing an upgrade as
// handed over. Before, the old one closed its socket at the handover, and
// an idle container failed every probe.
func TestControlThroughPeerTakeover(t *testing.T) {
	for chain, start := range chains {
		t.Run(chain, func(t *testing.T) {
			dir := t.TempDir()
			oldCtl, peerCtl := filepath.Join(dir, "old", "ctl"), filepath.Join(dir, "peer", "ctl")
			h := start(t, append(takeoverEnv(dir), envControl+"="+oldCtl, envPause+"=linger")...)
			wantPhase(t, oldCtl, ProcessServing)
			h.startPeer(envControl+"="+peerCtl, envPause+"=state")
			h.awaitPaused("state")
			wantPhase(t, peerCtl, ProcessStarting)
			wantPhase(t, oldCtl, ProcessUpgrading)
			h.release("state")
			if p, fail := h.awaitPeer(); p == 0 {
				t.Fatal(fail)
			}
			h.awaitPaused("linger") // handed over, alive: an idle container
			wantPhase(t, peerCtl, ProcessServing)
			wantPhase(t, oldCtl, ProcessHandedOver)
			r := upgradeVia(t, oldCtl, "")
			if r["committed"] != false || !strings.Contains(fmt.Sprint(r["reason"]), "handed over") {
				t.Fatalf("upgrade asked of the idle old process: %v, want it refused as handed over", r)
			}
			h.release("linger")
		})
	}
}

// wantPhase asks the control socket at path for the status, and fails
// unless its process is in phase.
func wantPhase(t *testing.T, path, phase string) {
	t.Helper()
	st := control(t, path, "HANDOFF-CONTROL 1 status")
	if len(st) != 1 || st[0]["phase"] != phase {
		t.Fatalf("status on %s: %v, want phase %q", path, st, phase)
	}
}

// TestPeerKilledDuringPark: a peer killed while the old process parks
// its connections (one held mid-request, so the park would last until
// the park timeout, a minute here) ends the upgrade as soon as the
// peer's channel ends, with cause exited, as an exec'd child's exit
// does. Before, nothing watched the channel during the park: the
// connections waited for the park timeout, and the cause was "other".
// The held request is answered by the old process, which serves on.
func TestPeerKilledDuringPark(t *testing.T) {
	for chain, start := range chains {
		t.Run(chain, func(t *testing.T) {
			h := start(t, append(takeoverEnv(t.TempDir()),
				envParkTimeout+"=1m", envPauseTimeout+"=2m", envUpgradeTimeout+"=3m")...)
			old := h.pid
			_, answer := heldRequest(t, h, "slow")
			l := startLoad(t, h.addr, 10)
			l.waitRounds(30)
			p := h.startPeer()
			h.stopLogged("phase=fds") // the early fds went: the park begins
			if err := h.kill(p, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			h.stopLogged("upgrade failed; this process carries on")
			if log := h.logs.String(); !strings.Contains(log, "cause="+CauseExited) {
				t.Fatalf("the upgrade to the killed peer rolled back, but not for its exit:\n%s", log)
			}
			h.release("hold-slow")
			if got := <-answer; got != strconv.Itoa(old) {
				t.Fatalf("held request answered by %q, want the old process %d", got, old)
			}
			l.waitRounds(30)
			l.stop()
			l.requireAllOn(old)
		})
	}
}

// TestPeerListenersOnly: in ListenersOnly mode a peer takes the listeners
// only: a connection the old process held stays its own and is served
// there until its client goes, and every new connection reaches the
// peer.
func TestPeerListenersOnly(t *testing.T) {
	for chain, start := range chains {
		t.Run(chain, func(t *testing.T) {
			h := start(t, append(takeoverEnv(t.TempDir()), envListenersOnly+"=1")...)
			old := h.pid
			kept := keptConn(t, h.addr, 3, true)
			p, fail := h.peer()
			if p == 0 {
				t.Fatal(fail)
			}
			if h.exit[2] != "1" {
				t.Fatalf("old process kept %s connections after the handover, want 1", h.exit[2])
			}
			if err := kept.round(3, true); err != nil {
				t.Fatalf("the old process's connection after the handover: %v", err)
			}
			if len(kept.pids) != 1 || !kept.pids[strconv.Itoa(old)] {
				t.Fatalf("the old process's connection served by %v, want pid %d alone", kept.pids, old)
			}
			for i := 0; i < 5; i++ {
				fresh := dialConn(t, h.addr)
				err := fresh.round(1, false)
				fresh.c.Close()
				if err != nil {
					t.Fatalf("new connection %d: %v", i, err)
				}
				if len(fresh.pids) != 1 || !fresh.pids[strconv.Itoa(p)] {
					t.Fatalf("new connection %d served by %v, want the peer %d", i, fresh.pids, p)
				}
			}
			kept.c.Close()
			if f := h.expect("drained"); f[1] != strconv.Itoa(old) {
				t.Fatalf("drained %v, want pid %d", f, old)
			}
		})
	}
}

// TestBeforeUpgrade: Options.BeforeUpgrade runs in the old process at
// each upgrade, exec'd or by a peer, before anything starts; its error
// refuses the upgrade (cause refused, not counted as a rollback, nothing
// started), and a refused peer is told BUSY and asks again until the
// application lets it in.
func TestBeforeUpgrade(t *testing.T) {
	for chain, start := range chains {
		t.Run(chain, func(t *testing.T) {
			dir := t.TempDir()
			flag := filepath.Join(dir, "before")
			setBefore := func(v string) {
				if err := os.WriteFile(flag, []byte(v), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			setBefore("fail")
			h := start(t, append(takeoverEnv(dir), envBefore+"="+flag)...)
			old := h.pid
			if p, fail := h.upgrade(); p != 0 || !strings.Contains(fail, "refused the upgrade for now: handoff: BeforeUpgrade: not now, on purpose") {
				t.Fatalf("upgrade with BeforeUpgrade failing: pid %d, %q; want it refused", p, fail)
			}
			h.stopLogged("cause=" + CauseRefused)
			if strings.Contains(h.logs.String(), "handoff: new process connected") {
				t.Fatal("a new process started although BeforeUpgrade refused")
			}
			h.startPeer()
			h.stopLogged("handoff: the serving process is busy; asking again")
			setBefore("")
			p, fail := h.awaitPeer()
			if p == 0 {
				t.Fatal(fail)
			}
			if n := strings.Count(h.logs.String(), "cause="+CauseRefused); n < 2 {
				t.Fatalf("%d refusals logged, want the exec'd upgrade's and the peer's at least", n)
			}
			if h.pid == old {
				t.Fatal("the peer did not take over")
			}
		})
	}
}
