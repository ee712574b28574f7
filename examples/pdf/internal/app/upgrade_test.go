package app

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
)

// TestUpgradeModeListeners: on SIGHUP the old process snapshots the ledger
// and hands over its listener only. The new process restores the snapshot;
// the old one keeps answering on its connection through the drain, then
// closes it and exits.
func TestUpgradeModeListeners(t *testing.T) {
	const drain = time.Second
	p := startPDF(t, modeListeners, "-drain-timeout", drain.String())
	old := p.pid
	c := pdftest.Dial(t, p.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	c.Ask(t, "CHARGE 2 alice 30", "OK 2 70")

	p.setVersion(t, "v2")
	mark := p.logs.len()
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	done := p.logs.await(t, mark, "upgrade complete", old)
	if field(done, "mode") != modeListeners {
		t.Fatalf("upgrade complete in mode %q, want %q", field(done, "mode"), modeListeners)
	}
	serving := p.logs.await(t, mark, "serving", -old)
	newPid, _ := strconv.Atoi(field(serving, "pid"))
	if got := p.readPidfile(t); got != newPid {
		t.Fatalf("pid file says %d, want the new process %d", got, newPid)
	}

	// Draining: the old process still answers on its connection, from its
	// own ledger. This top-up misses the snapshot and is lost with the old
	// process: the weakness of this mode, not a fault of the test.
	c.Ask(t, "VERSION 3", fmt.Sprintf("VERSION 3 v1.0.0 %d", old))
	c.Ask(t, "TOPUP 4 alice 5", "OK 4 75")

	// A new connection reaches the new process, which has the snapshot.
	n := pdftest.Dial(t, p.addr)
	n.Ask(t, "VERSION 1", fmt.Sprintf("VERSION 1 v2.0.0 %d", newPid))
	n.Ask(t, "BALANCE 2 alice", "BAL 2 70")

	// At the end of the drain the old process closes the connection.
	c.ClosedByServer(t)
	line := p.logs.await(t, mark, "drain done", old)
	if field(line, "closed") != "1" {
		t.Fatalf("drain done: %q, want 1 connection closed", line)
	}
	if took, err := time.ParseDuration(field(line, "took")); err != nil || took < drain {
		t.Fatalf("drain took %q, want at least the drain timeout %v", field(line, "took"), drain)
	}
	if code := p.exitCode(t); code != 0 {
		t.Fatalf("old process exit code %d", code)
	}
	n.Ask(t, "BALANCE 3 alice", "BAL 3 70")
}

// TestUpgradeModeRestart: on SIGHUP the process closes its listener and
// connections, saves the ledger and executes the binary again. The same
// pid serves the saved balances, with no fd of the old image left.
func TestUpgradeModeRestart(t *testing.T) {
	p := startPDF(t, modeRestart)
	pid := p.pid
	before := fds(t, pid)
	c := pdftest.Dial(t, p.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	c.Ask(t, "CHARGE 2 alice 30", "OK 2 70")

	p.setVersion(t, "v2")
	mark := p.logs.len()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c.ClosedByServer(t)
	done := p.logs.await(t, mark, "upgrade complete", pid)
	if field(done, "mode") != modeRestart {
		t.Fatalf("upgrade complete in mode %q, want %q", field(done, "mode"), modeRestart)
	}
	if got := p.readPidfile(t); got != pid {
		t.Fatalf("pid file says %d, want %d still", got, pid)
	}
	// The new image opens what the old one did when it started, and
	// nothing more; the pipe the test left it as fd 3 is gone too.
	after := fds(t, pid)
	if !slices.ContainsFunc(before, func(f string) bool { return strings.HasPrefix(f, "3 -> pipe:") }) {
		t.Fatalf("fd 3 is not the test's pipe: %v", before)
	}
	if i := slices.IndexFunc(after, func(f string) bool { return fdKind(f) == "pipe" }); i >= 0 {
		t.Fatalf("fd %s survived the restart", after[i])
	}
	kinds := map[string]int{}
	for _, f := range before {
		kinds[fdKind(f)]++
	}
	for _, f := range after {
		if kinds[fdKind(f)]--; kinds[fdKind(f)] < 0 {
			t.Fatalf("fd %s is new after the restart\nbefore:\n%s\nafter:\n%s",
				f, strings.Join(before, "\n"), strings.Join(after, "\n"))
		}
	}
	if left, _ := filepath.Glob(filepath.Join(p.dir, "handoff-*")); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}

	n := pdftest.Dial(t, p.addr)
	n.Ask(t, "VERSION 1", fmt.Sprintf("VERSION 1 v2.0.0 %d", pid))
	n.Ask(t, "BALANCE 2 alice", "BAL 2 70")
	select {
	case <-p.done:
		t.Fatalf("the process exited: %v", p.err)
	default:
	}
}

func TestUpgradeModeFlags(t *testing.T) {
	tests := []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"-upgrade-mode", "full"}, true},
		{[]string{"-upgrade-mode", "listeners", "-state", "s"}, true},
		{[]string{"-upgrade-mode", "restart", "-state", "s"}, true},
		{[]string{"-upgrade-mode", "listeners"}, false},
		{[]string{"-upgrade-mode", "restart"}, false},
		{[]string{"-upgrade-mode", "reload", "-state", "s"}, false},
	}
	for _, tt := range tests {
		c, err := parseFlags(tt.args)
		if err != nil {
			t.Fatalf("parseFlags(%q): %v", tt.args, err)
		}
		if err := c.check(); (err == nil) != tt.ok {
			t.Errorf("check(%q) = %v, want ok %v", tt.args, err, tt.ok)
		}
	}
	c, _ := parseFlags([]string{"-drain-timeout", "300ms"})
	if c.upgradeMode != modeFull || c.drainTimeout != 300*time.Millisecond {
		t.Fatalf("parseFlags = %+v", c)
	}
	if c, _ := parseFlags(nil); c.drainTimeout != 5*time.Second {
		t.Fatalf("default drain timeout %v", c.drainTimeout)
	}
	// Refused before anything starts.
	if code := Run("v1.0.0", ledger.NewV1(), []string{"-upgrade-mode", "restart"}); code != 2 {
		t.Fatalf("Run without -state in restart mode = %d, want 2", code)
	}
}
