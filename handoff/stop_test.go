//go:build linux

package handoff

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A stop during an upgrade, forced at each moment that matters, in a
// chain of servers in one process (inproc_test.go). Whatever the moment,
// the service ends stopped with exactly one snapshot, written by the
// process that owned the state, holding every reply a client got.

// stopOutcome collects what the servers said once a stop was sent: who
// saved (and the total they saved) and who stopped as handed over.
type stopOutcome struct {
	saved   map[int]uint64
	handed  []int
	failed  []string
	stopped map[int]bool
}

// awaitStop reads events until want processes have ended with "saved" or
// "stopped", or one says "error".
func (h *harness) awaitStop(want int) stopOutcome {
	h.t.Helper()
	out := stopOutcome{saved: map[int]uint64{}, stopped: map[int]bool{}}
	for len(out.stopped) < want {
		ev := h.next()
		pid, _ := strconv.Atoi(ev[1])
		switch ev[0] {
		case "saved":
			total, _ := strconv.ParseUint(ev[2], 10, 64)
			out.saved[pid] = total
			out.stopped[pid] = true
		case "stopped":
			out.handed = append(out.handed, pid)
			out.stopped[pid] = true
		case "failed":
			out.failed = append(out.failed, strings.Join(ev, " "))
		case "error":
			if strings.Contains(strings.Join(ev, " "), "save") {
				h.t.Fatalf("a save failed: %v", ev)
			}
		}
	}
	return out
}

// requireOneSnapshot checks that only owner saved, that the state file
// holds what it said, and that every reply a client got was counted in it.
func (h *harness) requireOneSnapshot(out stopOutcome, owner int, l *load) {
	h.t.Helper()
	if len(out.saved) != 1 {
		h.t.Fatalf("processes that saved: %v, want exactly one (pid %d)", out.saved, owner)
	}
	total, ok := out.saved[owner]
	if !ok {
		h.t.Fatalf("pid %d saved, want pid %d to", firstKey(out.saved), owner)
	}
	f, err := os.Open(filepath.Join(h.dir, "state"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	st, _, err := lineStates.Load(f, 1)
	if err != nil {
		h.t.Fatalf("state file: %v", err)
	}
	if got := st.(lineV1).Total; got != total {
		h.t.Fatalf("state file holds %d, the server said it saved %d", got, total)
	}
	if acked, sent := uint64(l.acked.Load()), uint64(l.sent.Load()); total < acked || total > sent {
		h.t.Fatalf("snapshot counts %d requests; clients got %d replies and sent %d requests", total, acked, sent)
	}
}

func firstKey(m map[int]uint64) int {
	for k := range m {
		return k
	}
	return 0
}

// stopLogged waits until the old process has logged what its Stop did.
func (h *harness) stopLogged(what string) {
	h.t.Helper()
	for end := time.Now().Add(60 * time.Second); !strings.Contains(h.logs.String(), what); {
		if time.Now().After(end) {
			h.t.Fatalf("no log line %q", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// stopDuringUpgrade starts an upgrade under load in a chain that start
// makes, holds it at step, sends SIGTERM to the processes named by to
// ("old", "new" or both), waits until the old process's Stop has logged
// logged, and lets the upgrade go on.
func stopDuringUpgrade(t *testing.T, start func(*testing.T, ...string) *harness, step, logged string,
	to ...string) (h *harness, l *load, old, newPid int) {
	h = start(t, envPause+"="+step)
	l = startLoad(t, h.addr, 50)
	l.waitRounds(100)
	old = h.pid
	h.kill(old, syscall.SIGHUP)
	paused := h.awaitPaused(step)
	if paused != old {
		newPid = paused
	}
	for _, who := range to {
		pid := old
		if who == "new" {
			pid = newPid
		}
		h.kill(pid, syscall.SIGTERM)
	}
	if logged != "" {
		h.stopLogged(logged)
	}
	h.release(step)
	return h, l, old, newPid
}

// TestStopBeforeCommit: SIGTERM to the old process when the new one is
// ready and the old one is about to commit. The stop wins: the upgrade
// rolls back, the new process is killed, and the old one saves.
func TestStopBeforeCommit(t *testing.T) {
	h, l, old, _ := stopDuringUpgrade(t, startInProcess, "decide", "stop during an upgrade: rolling it back", "old")
	out := h.awaitStop(1)
	l.halt()
	if len(out.failed) != 1 || !strings.Contains(out.failed[0], "stopping") {
		t.Fatalf("upgrade outcome %v, want it rolled back for the stop", out.failed)
	}
	h.requireOneSnapshot(out, old, l)
	for _, cl := range l.conns {
		if len(cl.pids) != 1 || !cl.pids[strconv.Itoa(old)] {
			t.Fatalf("a connection was served by %v, want only the old process %d", cl.pids, old)
		}
	}
}

// TestStopDuringPrecopy: SIGTERM to the old process while the new one
// loads the pre-copy (Options.Precopy), every connection still served by
// the old process. As before any commit, the stop wins: the upgrade rolls
// back at once, with the new process's Load still held (never released
// here), the new process is killed, and the old one saves the whole
// state, once.
func TestStopDuringPrecopy(t *testing.T) {
	h := startInProcess(t, envPause+"=precopy-load", envPrecopy+"=1")
	l := startLoad(t, h.addr, 50)
	l.waitRounds(100)
	old := h.pid
	h.kill(old, syscall.SIGHUP)
	if h.awaitPaused("precopy-load") == old {
		t.Fatal("the old process paused in the new process's Load")
	}
	h.kill(old, syscall.SIGTERM)
	out := h.awaitStop(1)
	l.halt()
	if len(out.failed) != 1 || !strings.Contains(out.failed[0], "stopping") {
		t.Fatalf("upgrade outcome %v, want it rolled back for the stop", out.failed)
	}
	h.requireOneSnapshot(out, old, l)
	for _, cl := range l.conns {
		if len(cl.pids) != 1 || !cl.pids[strconv.Itoa(old)] {
			t.Fatalf("a connection was served by %v, want only the old process %d", cl.pids, old)
		}
	}
}

// TestStopAfterCommit: SIGTERM to the old process just after it
// committed. The upgrade completes, the old process saves nothing and
// passes the stop on; the new one stops and saves.
func TestStopAfterCommit(t *testing.T) {
	h, l, old, _ := stopDuringUpgrade(t, startInProcess, "committed", "stop during an upgrade that has committed", "old")
	out := h.awaitStop(2)
	l.halt()
	if len(out.handed) != 1 || out.handed[0] != old {
		t.Fatalf("stopped as handed over: %v, want the old process %d", out.handed, old)
	}
	h.requireOneSnapshot(out, newOf(out, old), l)
}

// TestStopJustAfterHandover: SIGTERM to the old process after it handed
// over, while it is still alive. It is not lost: the new process stops
// and saves.
func TestStopJustAfterHandover(t *testing.T) {
	h := startInProcess(t, envPause+"=linger")
	l := startLoad(t, h.addr, 50)
	l.waitRounds(100)
	old := h.pid
	newPid, fail := h.upgrade()
	if newPid == 0 {
		t.Fatal(fail)
	}
	h.awaitPaused("linger")
	l.waitRounds(100)
	h.kill(old, syscall.SIGTERM)
	out := h.awaitStop(1)
	h.release("linger")
	l.halt()
	h.requireOneSnapshot(out, newPid, l)
}

// TestStopBothDuringUpgrade: as systemd's stop of a unit does, SIGTERM to
// both processes while the new one receives the connections. The old
// one rolls back and saves; the new one is killed before it could.
func TestStopBothDuringUpgrade(t *testing.T) {
	h, l, old, newPid := stopDuringUpgrade(t, startInProcess, "conns", "stop during an upgrade: rolling it back",
		"new", "old")
	out := h.awaitStop(1)
	l.halt()
	h.requireOneSnapshot(out, old, l)
	h.requireGone(newPid)
}

// TestStopNewBeforeCommit: SIGTERM to the new process alone while it
// takes over. It finishes the takeover, then stops as the owner and
// saves; the old one exits as handed over, saving nothing.
func TestStopNewBeforeCommit(t *testing.T) {
	h, l, _, newPid := stopDuringUpgrade(t, startInProcess, "conns", "", "new")
	out := h.awaitStop(1)
	l.halt()
	h.requireOneSnapshot(out, newPid, l)
}

// newOf returns the pid that saved, other than old.
func newOf(out stopOutcome, old int) int {
	for pid := range out.saved {
		if pid != old {
			return pid
		}
	}
	return 0
}

// requireGone waits until pid has exited, bounded.
func requireGone(t *testing.T, pid int) {
	t.Helper()
	for end := time.Now().Add(60 * time.Second); processAlive(pid); {
		if time.Now().After(end) {
			t.Fatalf("process %d is still running", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestOldDiesMidUpgrade: the old process is SIGKILLed after the new one
// connected, during the transfer and while the new one waits for COMMIT.
// The new process does not hang or serve half a handoff: it exits, saying
// what happened. No file is left behind.
func TestOldDiesMidUpgrade(t *testing.T) {
	for _, at := range []string{"first-batch", "decide"} {
		t.Run(at, func(t *testing.T) {
			h := startInProcess(t, envPause+"="+at)
			l := startLoad(t, h.addr, 300)
			l.waitRounds(100)
			old := h.pid
			h.kill(old, syscall.SIGHUP)
			paused := h.awaitPaused(at)
			h.kill(old, syscall.SIGKILL)
			h.release(at)
			var newPid int
			for {
				ev := h.next()
				if ev[0] == "error" {
					newPid, _ = strconv.Atoi(ev[1])
					break
				}
			}
			if at == "first-batch" && newPid != paused {
				t.Fatalf("pid %d failed, want the new process %d", newPid, paused)
			}
			h.requireGone(newPid)
			l.halt()
			if !h.logs.waitFor("died during the handoff; nothing was taken over", time.Minute) {
				t.Fatal("the new process did not say that the old one died")
			}
			if left, _ := filepath.Glob(filepath.Join(h.dir, "handoff-*")); len(left) > 0 {
				t.Fatalf("left behind: %v", left)
			}
		})
	}
}

// TestUpgradeTimesOutAtCommit: the new process is ready, and the old
// process's deadline passes just before it commits. The deadline wins:
// the new process never serves, and the old one carries on.
func TestUpgradeTimesOutAtCommit(t *testing.T) {
	h := startInProcess(t, envUpgradeTimeout+"=1s", envPauseTimeout+"=10s")
	l := startLoad(t, h.addr, 50)
	l.waitRounds(100)
	old := h.pid
	h.setOldFault("late:decide")
	p, fail := h.upgrade()
	if p != 0 || !strings.Contains(fail, "timed out") {
		t.Fatalf("upgrade: new pid %d, %q; want it rolled back on the timeout", p, fail)
	}
	h.setOldFault("")
	l.waitRounds(100)
	l.stop()
	l.requireAllOn(old)
	for _, cl := range l.conns {
		if len(cl.pids) != 1 {
			t.Fatalf("a connection was served by %v, want only the old process %d", cl.pids, old)
		}
	}
	if got := h.pidFile(); got != old {
		t.Fatalf("PID file names %d, want %d", got, old)
	}
}
