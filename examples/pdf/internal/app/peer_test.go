package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/examples/internal/peer"
	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
	"github.com/handoff-dev/handoff/handoff"
)

// TestIdleAfterPeerTakeover: a pod's pair (kubernetes/README.md). With a
// takeover socket and HANDOFF_TAKEOVER_AFTER_COMMIT=idle, a second process
// takes over from the first, connection and ledger, and the first idles,
// handed over, with the line the pods' tests wait for. A stop of the idle
// one does not save: the state file and the marker are the successor's;
// it exits 0. The successor saves at its own stop, and a cold start then
// serves what the clients were told.
func TestIdleAfterPeerTakeover(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(handoff.EnvTakeoverSocket, filepath.Join(dir, "takeover", "handoff.sock"))
	t.Setenv(peer.EnvAfterCommit, "idle")
	a := startIn(t, dir, modeFull)
	c := pdftest.Dial(t, a.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")

	b := launchOn(t, dir, os.Args[0], a.addr, "-upgrade-mode", modeFull)
	if line := b.logs.await(t, 0, "serving", b.pid); field(line, "upgraded") != "true" {
		t.Fatalf("the peer serves without having taken over: %s", line)
	}
	a.logs.await(t, 0, "handed over; idle until stopped", a.pid)
	c.Ask(t, "TOPUP 2 alice 5", "OK 2 105") // its connection moved to the peer
	if m := mustMarker(t, a.state); m.pid != b.pid {
		t.Fatalf("marker names pid %d, want the peer %d", m.pid, b.pid)
	}
	before, _ := os.ReadFile(a.state)

	if err := syscall.Kill(a.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := a.exitCode(t); code != 0 {
		t.Fatalf("the idle process exited %d at a stop, want 0", code)
	}
	if after, _ := os.ReadFile(a.state); !bytes.Equal(before, after) {
		t.Fatal("the idle process wrote the state file at its stop; it is the successor's")
	}
	if m := mustMarker(t, a.state); m.pid != b.pid {
		t.Fatalf("marker names pid %d after the idle one's stop, want the peer %d", m.pid, b.pid)
	}
	if strings.Contains(a.logs.String(), `msg="state saved"`) {
		t.Fatalf("the idle process saved:\n%s", a.logs)
	}
	c.Ask(t, "BALANCE 3 alice", "BAL 3 105")

	b.stop(t, b.pid)
	b.logs.await(t, 0, "state saved", b.pid)
	t.Setenv(handoff.EnvTakeoverSocket, filepath.Join(dir, "takeover-next", "handoff.sock"))
	q := startIn(t, dir, modeFull)
	pdftest.Dial(t, q.addr).Ask(t, "BALANCE 1 alice", "BAL 1 105")
}
