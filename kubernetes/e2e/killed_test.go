//go:build e2epod

package e2e

import (
	"errors"
	"io"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestNewKilledAfterCommit: the new container is killed (SIGKILL to its
// process, as the OOM killer would) after it took over. Its connections
// were its own from the commit on, and end with it: no mode promises
// more, and the idle container holds nothing to fall back on. The
// kubelet starts the container again with the same image (here the test
// does, as podman run: its containers run without restarts): the new
// process finds the takeover socket stale (nobody listens), starts as a
// first process, binds the port again and serves, from the state's last
// snapshot; the idle container stays idle and handed over throughout,
// and new connections are answered.
func TestNewKilledAfterCommit(t *testing.T) {
	p := playPair(t, nil)
	serving, idle := p.roles(t)
	w := p.witness(t)
	p.takeover(t, serving, idle, "v2", 2, 1)
	serving, idle = idle, serving
	w.version(t, pdfVersion["v2"])
	before := inspect(t, idle)

	pid, err := strconv.Atoi(inspect(t, serving).pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := exited(t, serving); code != "137" {
		t.Fatalf("the killed container exited %s, want 137 (SIGKILL)", code)
	}
	w.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.ReadAll(w.r); err != nil && !isReset(err) {
		t.Fatalf("the killed process's connection: %v, want its end (EOF or a reset)", err)
	}
	if st := status(t, idle); st["phase"] != "handed-over" {
		t.Fatalf("%s after the kill: phase %q, want it idle (handed-over)", idle, st["phase"])
	}

	if err := removeSettled("rm", serving); err != nil {
		t.Fatal(err)
	}
	p.run(t, serving, p.image("v2"), "", nil)
	waitLines(t, serving, 1, lineServing)
	st := status(t, serving)
	if st["phase"] != "serving" || st["generation"] != "0" {
		t.Fatalf("%s started again: phase %q generation %q, want a first process serving", serving, st["phase"], st["generation"])
	}
	if after := inspect(t, idle); after.pid != before.pid || after.started != before.started {
		t.Errorf("the idle container was %+v and is %+v: want the same process, idle throughout", before, after)
	}
	p.witness(t).version(t, pdfVersion["v2"])
}

// isReset reports whether err is a connection reset: what a client of a
// killed process may read instead of EOF.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
