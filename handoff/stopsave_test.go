//go:build linux

package handoff

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Stops and saves at the moments an independent fault probe found: just
// after a Rolling move, as the old process exits, and an upgrade whose new
// process cannot be named in the PID file.

// poll waits up to d for an event; nil if none came.
func (h *harness) poll(d time.Duration) []string {
	h.t.Helper()
	select {
	case ev, ok := <-h.events:
		if !ok {
			h.t.Fatal("event socket closed")
		}
		return h.note(ev)
	case <-time.After(d):
		return nil
	}
}

// TestStopNewJustAfterRollingMove: SIGTERM to the new process of a Rolling
// upgrade right after the last frame of the move, while the handlers of
// the moved connections have not applied what they carry yet (they are
// held at "apply"). The stop waits for them: the state it saves holds
// every reply a client got, those of the old process after its snapshot
// included.
func TestStopNewJustAfterRollingMove(t *testing.T) {
	h := startInProcess(t, envRolling+"=1", envCarry+"=1", envPause+"=committed,apply")
	l := startSteadyLoad(t, h.addr, 50)
	l.waitRounds(100)
	if err := h.kill(h.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.awaitPaused("committed")
	l.waitRounds(500) // served by the old process after its snapshot: carried
	h.release("committed")
	newPid := h.awaitPaused("apply")
	h.stopLogged("stayed_with_old=") // the new process has read END
	if err := h.kill(newPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The stop must wait for the held handlers; a save now misses what
	// they carry.
	deadline := time.Now().Add(60 * time.Second) // a safety net only
	for !strings.Contains(h.logs.String(), "stop during a rolling move") {
		if time.Now().After(deadline) {
			t.Fatal("the new process neither waited for the moved connections nor saved")
		}
		if ev := h.poll(time.Millisecond); len(ev) > 2 && ev[0] == "saved" {
			t.Fatalf("pid %s saved a total of %s before the moved connections' handlers applied what they "+
				"carry; clients got %d replies", ev[1], ev[2], l.acked.Load())
		}
	}
	h.release("apply")
	out := h.awaitStop(1)
	l.halt()
	h.requireOneSnapshot(out, newPid, l)
}

// TestStopDuringRollingMoveHeldOpen: as a service manager's stop of the
// whole service does, SIGTERM to both processes of a Rolling upgrade
// while a connection whose handler cannot reach a boundary (a request
// that takes ten minutes) holds the move open, with a move timeout of ten
// minutes. The stop does not wait for the move timeout: the move ends a
// park timeout later, the stuck connection is left to the stragglers'
// policy, and the new process stops and saves everything the others
// carried.
func TestStopDuringRollingMoveHeldOpen(t *testing.T) {
	h := startInProcess(t, envRolling+"=1", envCarry+"=1", envMoveTimeout+"=10m", envCloseStragglers+"=1")
	old := h.pid
	slowRequest(t, h.addr, 600000)
	l := startSteadyLoad(t, h.addr, 20)
	l.waitRounds(50)
	if err := h.kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	newPid, _ := strconv.Atoi(h.expect("ready")[1])
	l.waitServedBy(newPid) // every connection but the slow one has moved
	if !l.allServedBy(strconv.Itoa(newPid)) {
		t.Fatalf("the load's connections did not all move to pid %d", newPid)
	}
	for _, pid := range []int{newPid, old} {
		if err := h.kill(pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	out := h.awaitStop(2)
	l.halt()
	if len(out.handed) != 1 || out.handed[0] != old {
		t.Fatalf("stopped as handed over: %v, want the old process %d", out.handed, old)
	}
	h.requireOneSnapshot(out, newPid, l)
	if !h.logs.waitFor("closed=1", time.Minute) {
		t.Fatal("the stuck connection was not closed as a straggler")
	}
}

// TestStopOldAsItExits: SIGTERM to the old process after it handed over,
// received while it lingers but not passed on yet when it goes on to exit
// (the goroutine that passes stops on is held at "passing", as a busy
// scheduler can leave it). The old process does not exit before it has
// passed the stop on: the new process stops and saves.
func TestStopOldAsItExits(t *testing.T) {
	h := startInProcess(t, envPause+"=linger,passing,exiting")
	l := startLoad(t, h.addr, 50)
	l.waitRounds(100)
	old := h.pid
	newPid, fail := h.upgrade()
	if newPid == 0 {
		t.Fatal(fail)
	}
	h.awaitPaused("linger")
	l.waitRounds(100)
	if err := h.kill(old, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	h.awaitPaused("passing") // received, not passed on yet
	h.release("linger")
	deadline := time.Now().Add(60 * time.Second) // a safety net only
	for {
		if time.Now().After(deadline) {
			t.Fatalf("the old process %d neither exited nor reached Exiting", old)
		}
		if _, ok := h.paused["exiting"]; ok {
			break // the old process waits for the stop to be passed on
		}
		if !h.alive(old) {
			t.Fatalf("the old process %d exited with a stop it had received and not passed on; "+
				"the new process %d serves on", old, newPid)
		}
		h.poll(time.Millisecond)
	}
	h.release("passing")
	h.release("exiting")
	out := h.awaitStop(1)
	l.halt()
	h.requireOneSnapshot(out, newPid, l)
	h.requireGone(old)
}

// TestPIDFileFullDisk: the PID file is on a file system that is full (a
// real tmpfs, since root writes through any permission). The new process
// cannot be named, so the upgrade does not commit: it rolls back saying
// why, the old process serves on and the PID file names it still. With
// room again, the next upgrade commits.
func TestPIDFileFullDisk(t *testing.T) {
	run := t.TempDir()
	if err := unix.Mount("tmpfs", run, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(run, unix.MNT_DETACH) })
	pidPath := filepath.Join(run, "pid")
	h := startServer(t, envPIDFile+"="+pidPath)
	old := h.pid
	requirePIDFile(t, pidPath, old)
	filler := fillFS(t, run)
	l := startLoad(t, h.addr, 20)
	l.waitRounds(100)
	p, fail := h.upgrade()
	if p != 0 {
		t.Fatalf("upgrade committed to pid %d although the PID file cannot name it", p)
	}
	if !strings.Contains(fail, "PID file") || !strings.Contains(fail, "no space left on device") {
		t.Fatalf("upgrade failed with %q; want the PID file's cause", fail)
	}
	t.Logf("rolled back: %s", fail)
	l.waitRounds(100)
	l.stop()
	l.requireAllOn(old)
	for _, cl := range l.conns {
		if len(cl.pids) != 1 {
			t.Fatalf("a connection was served by %v, want only the old process %d", cl.pids, old)
		}
	}
	requirePIDFile(t, pidPath, old)
	requireOnly(t, run, "pid", filepath.Base(filler))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	p, fail = h.upgrade()
	if p == 0 {
		t.Fatalf("upgrade with room again: %s", fail)
	}
	requirePIDFile(t, pidPath, p)
	requireOnly(t, run, "pid")
}

func requirePIDFile(t *testing.T, path string, want int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || got != want {
		t.Fatalf("PID file holds %q, want %d", b, want)
	}
}

// fillFS writes a file in dir until its file system is full.
func fillFS(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// requireOnly checks that dir holds the files names and nothing else.
func requireOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}
