//go:build linux

package handoff

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envRunIdle sets Service.IdleAfterHandover of runnerMain;
// envRunLongShutdown gives it a Shutdown that says "shutdown <pid>" and
// returns only when its context ends, which DrainTimeout makes far off.
const (
	envRunIdle         = "HANDOFF_TEST_RUN_IDLE"
	envRunLongShutdown = "HANDOFF_TEST_RUN_LONG_SHUTDOWN"
)

// runnerMain is the test chains' line server written with Run: its
// Options and handlers are serverMain's, its life is Run's (the
// library's SIGHUP, Run's stop and save).
func runnerMain(p *proc) {
	srv := &lineServer{p: p}
	opts := p.options(srv)
	opts.NoSignal = false
	var up *Upgrader
	var ln *Listener
	svc := Service{
		Setup: func(u *Upgrader) error {
			up = u
			servers.Store(u, srv)
			var err error
			ln, err = u.Listen("tcp", p.getenv(envAddr))
			return err
		},
		Serve: func() error {
			p.report("ready %d %s %d", p.pid, ln.Addr(), p.total(up))
			for {
				c, err := ln.AcceptConn()
				if err != nil {
					return err
				}
				go srv.serve(c, nil)
			}
		},
		IdleAfterHandover: p.getenv(envRunIdle) != "",
		Save: func() error {
			err := srv.saveFile()
			if err != nil {
				p.report("unsaved %d %v", p.pid, err)
			}
			return err
		},
	}
	if listed(p.getenv(envPause), "sighup") {
		// Its own SIGHUP upgrade, held at its start by the test.
		svc.Upgrade = func() {
			p.barrier("sighup")
			_ = up.Upgrade(context.Background())
		}
	}
	if p.getenv(envRunLongShutdown) != "" {
		svc.DrainTimeout = time.Hour
		svc.Shutdown = func(ctx context.Context) error {
			p.report("shutdown %d", p.pid)
			<-ctx.Done()
			return ctx.Err()
		}
	}
	err := Run(opts, svc)
	if err != nil {
		p.report("error %d %v", p.pid, err)
		os.Exit(1)
	}
	p.report("exit %d %d 0 false 0", p.pid, len(up.Conns()))
}

// TestRun: a server written with Run upgrades by SIGHUP (the library's)
// under load, every connection served by each process in turn, and at a
// stop the process that serves saves the state. A save that fails (its
// directory is missing, as a full disk fails it) keeps the process
// serving with its state; the stop sent again once the cause is fixed
// saves it.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "missing", "state")
	h := startServer(t, envRole+"=runner", envState+"="+state)
	l := startLoad(t, h.addr, 20)
	l.waitRounds(50)
	pids := []int{h.pid}
	for i := 0; i < 2; i++ {
		p, fail := h.upgrade()
		if p == 0 {
			t.Fatalf("upgrade %d: %s", i, fail)
		}
		l.waitServedBy(p)
		pids = append(pids, p)
	}
	l.stop()
	l.requireAllOn(pids...)

	l2 := startLoad(t, h.addr, 10)
	l2.waitRounds(30)
	last := h.pid
	if err := h.kill(last, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if f := h.expect("unsaved"); atoi(f[1]) != last {
		t.Fatalf("%v: want pid %d's save to fail", f, last)
	}
	l2.waitRounds(30) // still serving
	h.stopLogged("handoff: Run: state not saved; still serving")
	if err := os.Mkdir(filepath.Dir(state), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := h.kill(last, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	f := h.expect("saved")
	if atoi(f[1]) != last {
		t.Fatalf("%v: want pid %d to save", f, last)
	}
	l2.halt() // the process exits: the load's last requests fail
	noServeAlarm(t, h)
	total := uint64(atoi(f[2]))
	acked, sent := uint64(l.acked.Load()+l2.acked.Load()), uint64(l.sent.Load()+l2.sent.Load())
	if total < acked || total > sent {
		t.Fatalf("saved total %d; clients got %d replies and sent %d requests", total, acked, sent)
	}
}

// TestRunIdle: with IdleAfterHandover the old process stays after a
// peer took over, holding no connection, until a stop signal, which is
// its own (the peer serves on); then it exits.
func TestRunIdle(t *testing.T) {
	h := startServer(t, append(takeoverEnv(t.TempDir()), envRole+"=runner", envRunIdle+"=1")...)
	old := h.pid
	l := startLoad(t, h.addr, 10)
	l.waitRounds(30)
	p := h.startPeer()
	if f := h.expect("ready"); atoi(f[1]) != p {
		t.Fatalf("%v: want the peer %d ready", f, p)
	}
	l.waitServedBy(p)
	h.stopLogged("handoff: Run: idle until stopped")
	if !h.alive(old) {
		t.Fatalf("old process %d exited; want it idle", old)
	}
	if err := h.kill(old, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if f := h.expect("exit"); atoi(f[1]) != old || f[2] != "0" {
		t.Fatalf("%v: want the idle old process %d to exit holding no connection", f, old)
	}
	l.waitRounds(30)
	l.stop()
	l.requireAllOn(old, p)
	noServeAlarm(t, h)
}

// noServeAlarm fails if Run took a Serve that ended at a handover or a
// stop for one that ended while the process served.
func noServeAlarm(t *testing.T, h *harness) {
	t.Helper()
	if strings.Contains(h.logs.String(), "Serve returned while the process serves") {
		t.Error("Run said Serve ended while the process served; it ended at a handover or a stop")
	}
}

// TestRunUnsavedRefusesUpgrade: after a stop whose save failed, the
// process serves on with its state, and a SIGHUP neither upgrades it
// (the successor would take a state this process is stopping with) nor
// kills it (SIGHUP's default action once the Upgrader's Stop has let the
// signal go): Run refuses it, and the next stop saves.
func TestRunUnsavedRefusesUpgrade(t *testing.T) {
	state := filepath.Join(t.TempDir(), "missing", "state")
	h := startServer(t, envRole+"=runner", envState+"="+state)
	first := h.pid
	l := startLoad(t, h.addr, 10)
	l.waitRounds(30)
	if err := h.kill(first, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if f := h.expect("unsaved"); atoi(f[1]) != first {
		t.Fatalf("%v: want pid %d's save to fail", f, first)
	}
	if err := h.kill(first, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.stopLogged("handoff: Run: upgrade refused: the state is not saved")
	l.waitRounds(30) // still serving, by the first process
	if err := os.Mkdir(filepath.Dir(state), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := h.kill(first, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	f := h.expect("saved")
	if atoi(f[1]) != first {
		t.Fatalf("%v: want pid %d to save", f, first)
	}
	l.halt()
	l.requireAllOn(first)
	noServeAlarm(t, h)
}

// TestRunUpgradeOneAtATime: Service.Upgrade runs for a SIGHUP; a SIGHUP
// while it runs waits for it (never two at once), the running one goes on
// and hands over, the waiting one is then dropped (this process no longer
// serves), and only one new process starts.
func TestRunUpgradeOneAtATime(t *testing.T) {
	h := startServer(t, envRole+"=runner", envPause+"=sighup")
	old := h.pid
	l := startLoad(t, h.addr, 10)
	l.waitRounds(30)
	if err := h.kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if pid := h.awaitPaused("sighup"); pid != old {
		t.Fatalf("pid %d paused in its SIGHUP upgrade, want %d", pid, old)
	}
	if err := h.kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.stopLogged("handoff: Run: SIGHUP during an upgrade: it starts once this one has ended")
	h.release("sighup")
	p, fail := h.awaitUpgrade()
	if p == 0 {
		t.Fatalf("upgrade: %s", fail)
	}
	l.waitServedBy(p)
	l.stop()
	l.requireAllOn(old, p)
	if n := strings.Count(h.logs.String(), "handoff: new process connected"); n != 1 {
		t.Fatalf("%d new processes connected, want 1", n)
	}
	noServeAlarm(t, h)
}

// TestRunStopCutsShutdownShort: after a handover, a stop signal ends the
// Shutdown of what stayed (its context ends) and the process exits
// rather than idles: the orchestrator is stopping it.
func TestRunStopCutsShutdownShort(t *testing.T) {
	h := startServer(t, append(takeoverEnv(t.TempDir()), envRole+"=runner", envRunIdle+"=1", envRunLongShutdown+"=1")...)
	old := h.pid
	p := h.startPeer()
	// The peer's Ready and the old process's shutdown both follow the
	// commit, in either order.
	got := map[string]int{}
	for range 2 {
		f := h.next()
		got[f[0]] = atoi(f[1])
	}
	if got["ready"] != p || got["shutdown"] != old {
		t.Fatalf("events %v: want the peer %d ready and the old process %d shutting down", got, p, old)
	}
	if err := h.kill(old, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if f := h.expect("exit"); atoi(f[1]) != old {
		t.Fatalf("%v: want the old process %d to exit", f, old)
	}
	h.stopLogged("handoff: Run: stop during the shutdown after a handover: cutting it short")
	if strings.Contains(h.logs.String(), "handoff: Run: idle until stopped") {
		t.Fatal("the old process idled after a stop during its shutdown")
	}
	if !h.alive(p) {
		t.Fatalf("the peer %d exited; a stop of the old process is not its own", p)
	}
}
