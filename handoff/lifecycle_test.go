//go:build linux

package handoff

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNewLeavesTheProcessAlone: New changes nothing global (os.Args
// stays as it was), and the Upgrader's phases refuse what they must. No
// fork: the Upgrader acts on the test process through an env of its own,
// whose claim is as fresh as a new process's, so that every round of
// -count tests it.
func TestNewLeavesTheProcessAlone(t *testing.T) {
	args := append([]string(nil), os.Args...)
	pidFile := filepath.Join(t.TempDir(), "pid")
	e := newOSEnv()
	up, err := newUpgrader(Options{NoSignal: true, PIDFile: pidFile}, e)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(os.Args, "\x00") != strings.Join(args, "\x00") {
		t.Fatalf("os.Args is %q after New, was %q", os.Args, args)
	}
	if !filepath.IsAbs(up.Binary()) {
		t.Fatalf("Binary() = %q, want an absolute path", up.Binary())
	}
	if _, err := newUpgrader(Options{NoSignal: true}, e); !errors.Is(err, errTwice) {
		t.Fatalf("a second New: %v, want it refused", err)
	}
	if err := up.Upgrade(context.Background()); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Upgrade before Ready: %v, want ErrNotReady", err)
	}
	ln, err := up.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(pidFile); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("PID file holds %q, want %d", b, os.Getpid())
	}
	echoOnce(t, up, ln)
	if err := up.Stop(); err != nil {
		t.Fatalf("Stop: %v, want nil: this process owns its state", err)
	}
	select {
	case <-up.Exit():
	default:
		t.Fatal("Exit is not closed after Stop")
	}
	if err := up.Upgrade(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Upgrade after Stop: %v, want ErrStopped", err)
	}
	if err := up.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	ln.Close()
}

// echoOnce checks that the listener accepts and its Conn reads and writes.
func echoOnce(t *testing.T, up *Upgrader, ln *Listener) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := ln.AcceptConn()
		if err == nil {
			var msg []byte
			if msg, err = c.Next(scanLine); err == nil {
				_, err = c.Write(append(msg, '\n'))
			}
			c.Close()
		}
		done <- err
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write([]byte("hello\n"))
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16)
	n, _ := nc.Read(buf)
	if err := <-done; err != nil || string(buf[:n]) != "hello\n" {
		t.Fatalf("echo: %q, %v", buf[:n], err)
	}
	if len(up.Conns()) != 0 {
		t.Fatalf("%d connections tracked after close", len(up.Conns()))
	}
}

func scanLine(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	return 0, nil, nil
}

// TestChannelReachesOnlyTheNewProcess: a program that either process
// starts during an upgrade inherits no socket and no handoff variable.
func TestChannelReachesOnlyTheNewProcess(t *testing.T) {
	h := startServer(t, envProbe+"=early,conns")
	h.kill(h.pid, syscall.SIGHUP)
	probes := map[string]string{}
	var ready, exited bool
	for !ready || !exited {
		ev := h.next()
		switch ev[0] {
		case "probe":
			probes[ev[2]] = strings.Join(ev[3:], " ")
		case "ready":
			ready = true
		case "exit":
			exited = true
		case "failed", "error":
			t.Fatalf("upgrade: %v", ev)
		}
	}
	for _, where := range []string{"early", "conns"} {
		if probes[where] != "sockets=0 env=false" {
			t.Errorf("a program started at %s saw %q, want no socket and no variable", where, probes[where])
		}
	}
}

// TestHungBinaryLeavesNothing: a new binary that is a shell script
// running a long sleep is rolled back on the timeout, and nothing it
// started survives holding the listening socket: once the server is gone,
// its port is free.
func TestHungBinaryLeavesNothing(t *testing.T) {
	h := startServer(t, envUpgradeTimeout+"=1s")
	script := filepath.Join(h.dir, "hang.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep 987654\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h.deploy(script)
	old := h.pid
	if p, fail := h.upgrade(); p != 0 || !strings.Contains(fail, "timed out") {
		t.Fatalf("upgrade to a hanging script: pid %d, %q; want it rolled back on the timeout", p, fail)
	}
	for end := time.Now().Add(60 * time.Second); sleeperRuns(); {
		if time.Now().After(end) {
			t.Fatal("the script's sleep survived the rollback")
		}
		time.Sleep(time.Millisecond)
	}
	h.killAll()
	requireGone(t, old)
	var ln net.Listener
	var err error
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); {
		if ln, err = net.Listen("tcp", h.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("the server's port is still held: %v", err)
	}
	ln.Close()
}

// sleeperRuns reports whether any process runs "sleep 987654".
func sleeperRuns() bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if string(b) == "sleep\x00987654\x00" {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if processAlive(pid) {
				return true
			}
		}
	}
	return false
}

// TestSIGHUPEarlyInNewProcess: a second reload that reaches the new
// process before its application installed a SIGHUP handler (here: in
// main, before New) does not kill it; the upgrade completes.
func TestSIGHUPEarlyInNewProcess(t *testing.T) {
	h := startServer(t, envPause+"=main")
	h.kill(h.pid, syscall.SIGHUP)
	child := h.awaitPaused("main")
	if err := h.kill(child, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.release("main")
	p, fail := h.awaitUpgrade()
	if p != child {
		t.Fatalf("upgrade: new pid %d (%s), want %d to take over", p, fail, child)
	}
}

// TestLogsTellTheUpgrade: an upgrade, and a rollback, can be reconstructed
// from the log lines of both processes: a line per phase with the
// generation, pids, counts and times, and the reason of the rollback.
//
// Real processes: the rejecting new process exits microseconds after its
// ABORT, and the old one must still name the refusal as the cause
// (TestRefusalBeatsExit pins the order that once made it "exited").
func TestLogsTellTheUpgrade(t *testing.T) {
	h := startServer(t)
	l := startLoad(t, h.addr, 20)
	l.waitRounds(50)
	old := h.pid
	h.setFault("reject-state")
	if p, _ := h.upgrade(); p != 0 {
		t.Fatal("upgrade with a rejected state committed")
	}
	h.setFault("")
	newPid, fail := h.upgrade()
	if newPid == 0 {
		t.Fatal(fail)
	}
	l.waitServedBy(newPid)
	l.stop()
	h.stopLogged("handoff: took over")
	h.stopLogged("handoff: upgrade committed")
	h.stopLogged("phase=resume")
	from, to := "pid="+strconv.Itoa(old), "to="+strconv.Itoa(newPid)
	want := [][]string{
		{"handoff: upgrade failed", "cause=rejected", "state rejected on purpose", from},
		{"handoff: upgrade phase", "phase=started", to, from},
		{"handoff: upgrade phase", "phase=connected", to},
		{"handoff: upgrade phase", "phase=fds", to, "conns="},
		{"handoff: upgrade phase", "phase=park", to},
		{"handoff: upgrade phase", "phase=parked", to},
		{"handoff: upgrade phase", "phase=state", to, "bytes="},
		{"handoff: upgrade phase", "phase=ready", to},
		{"handoff: handed over", to, "pause="},
		{"handoff: upgrade committed", "generation=0", to},
		{"handoff: takeover phase", "phase=fds", "pid=" + strconv.Itoa(newPid), "from=" + strconv.Itoa(old)},
		{"handoff: takeover phase", "phase=parked", "pid=" + strconv.Itoa(newPid)},
		{"handoff: takeover phase", "phase=state", "generation=1"},
		{"handoff: took over", "generation=1", "pid=" + strconv.Itoa(newPid)},
		{"handoff: takeover phase", "phase=resume", "pid=" + strconv.Itoa(newPid), "conns="},
	}
	lines := strings.Split(h.logs.String(), "\n")
	for _, w := range want {
		if !anyLineHasAll(lines, w) {
			t.Errorf("no log line with all of %q", w)
		}
	}
	// Every connection taken over was taken up by its handler.
	took, resumed := fieldOf(lines, "handoff: took over", "conns="), fieldOf(lines, "phase=resume", "conns=")
	if took == "" || took != resumed {
		t.Errorf("took over %q connections, resumed %q", took, resumed)
	}
}

// fieldOf returns the value of field (name=) in the first line with marker.
func fieldOf(lines []string, marker, field string) string {
	for _, l := range lines {
		if !strings.Contains(l, marker) {
			continue
		}
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, field); ok {
				return v
			}
		}
	}
	return ""
}

// TestPanicInCarry: an application's Carry read panics in the old process:
// the upgrade rolls back for that reason and every connection carries on
// with the old process; its restore panics in the new process, after the
// commit: the new process logs it and serves every connection (the value
// is lost, nothing else).
func TestPanicInCarry(t *testing.T) {
	h := startInProcess(t)
	l := startLoad(t, h.addr, 50)
	l.waitRounds(100)
	old := h.pid
	h.setOldFault("panic:carry")
	if p, fail := h.upgrade(); p != 0 || !strings.Contains(fail, `Carry "fault" read panicked`) {
		t.Fatalf("upgrade with a panicking Carry read: pid %d, %q; want it rolled back for the panic", p, fail)
	}
	h.setOldFault("")
	l.waitRounds(100)
	h.setFault("panic:restore")
	p, fail := h.upgrade()
	if p == 0 {
		t.Fatalf("the upgrade with a panicking restore: %s", fail)
	}
	h.stopLogged(`Carry \"fault\" restore panicked`)
	l.waitServedBy(p)
	l.waitRounds(100)
	l.stop()
	l.requireAllOn(old, p)
}

func anyLineHasAll(lines, parts []string) bool {
	for _, line := range lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// TestPanicInOldProcessLeavesNoStuckUpgrade: the application's SaveState
// panics in the old process in the middle of an upgrade. The upgrade rolls
// back for that reason, every connection carries on, and the upgrade
// bookkeeping is not left stuck: the next upgrade runs and commits.
func TestPanicInOldProcessLeavesNoStuckUpgrade(t *testing.T) {
	h := startInProcess(t)
	l := startLoad(t, h.addr, 50)
	l.waitRounds(100)
	old := h.pid
	h.setOldFault("panic:save")
	if p, fail := h.upgrade(); p != 0 || !strings.Contains(fail, "save state panicked") {
		t.Fatalf("upgrade with a panicking SaveState: pid %d, %q; want it rolled back for the panic", p, fail)
	}
	h.setOldFault("")
	l.waitRounds(100)
	p, fail := h.upgrade()
	if p == 0 {
		t.Fatalf("the upgrade after the panic: %s", fail)
	}
	l.waitServedBy(p)
	l.stop()
	l.requireAllOn(old, p)
}
