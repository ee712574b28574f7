//go:build e2esystemd

package e2e

import (
	"strings"
	"testing"
	"time"
)

// The witness's account: changed under v1, so that v2's STATS shows the
// ledger (charge counts included) crossed the upgrades.
const witnessAcct = "witness-acct"

// TestReload is scenario A: systemctl reload upgrades v1 to v2, then v2
// to v2, under load. Each reload exits 0, a new MainPID of the new release
// serves a connection held since the start, the unit never leaves active
// (reloading allowed), NRestarts stays, every load connection lives and
// every reply is exact. Then systemctl stop is graceful (the last process
// saves the ledger, no SIGKILL), the next start serves the saved ledger,
// and the journal has no failure.
func TestReload(t *testing.T) {
	c := boot(t)
	s := c.start()
	witness := dial(t, "e2e-witness")
	witness.requireServedBy("v1", s.MainPID)
	witness.expect("OK 1000", "TOPUP", witnessAcct, "1000")
	witness.expect("OK 900", "CHARGE", witnessAcct, "100")

	p3 := c.reloadTwiceUnderLoad(s, witness)

	// A stop after upgrades is a stop: the process that took over saves.
	c.stopGracefully(p3)
	s = c.start()
	fresh := dial(t, "e2e-after-stop")
	fresh.requireServedBy("v2", s.MainPID)
	fresh.expect("STATS 900 1", "STATS", witnessAcct)
	c.requireCleanJournal()
}

// reloadTwiceUnderLoad reloads into v2 twice under load, s being the
// service as it ran before: both commit, every reply is exact, only the
// three MainPIDs answered, the witness's ledger crossed the v1->v2
// migration, and the unit never restarted. It returns the last MainPID.
func (c *container) reloadTwiceUnderLoad(s unitState, witness *client) int {
	c.t.Helper()
	l := startLoad(c.t)
	time.Sleep(settle)
	p2 := c.upgrade("v2", witness)
	time.Sleep(settle)
	p3 := c.upgrade("v2", witness)
	time.Sleep(settle)
	r := l.stop()
	l.requireExact(r)
	l.requirePids(r, s.MainPID, p2, p3)
	witness.expect("STATS 900 1", "STATS", witnessAcct)
	requireSteady(c, s)
	return p3
}

// TestReloadBroken is scenario B: systemctl reload into a release whose
// binary exits at once fails (non-zero), the old MainPID serves on with
// every connection, the unit stays active and systemctl status shows the
// rollback; a reload into a good release after it commits.
func TestReloadBroken(t *testing.T) {
	c := boot(t)
	c.deploy("v2")
	s := c.start()
	witness := dial(t, "e2e-witness")
	witness.requireServedBy("v2", s.MainPID)
	witness.expect("OK 1000", "TOPUP", witnessAcct, "1000")

	l := startLoad(t)
	time.Sleep(settle)
	const what = "reload to a binary that exits 3"
	before, out, status, samples := c.reload(broken)
	if status == 0 {
		t.Fatalf("%s: systemctl reload exit status 0, want non-zero:\n%s", what, out)
	}
	t.Logf("%s: systemctl reload said (exit status %d):\n%s", what, status, out)
	c.requireNeverLeft(what, before, samples)
	if after := samples[len(samples)-1]; after.MainPID != before.MainPID {
		t.Fatalf("%s: MainPID %d -> %d, want the old process still main", what, before.MainPID, after.MainPID)
	}
	witness.requireServedBy("v2", before.MainPID)
	if st := c.mustState(service); !strings.Contains(st.StatusText, "rolled back") {
		t.Fatalf("%s: StatusText %q, want it to say the upgrade rolled back", what, st.StatusText)
	}
	statusOut, _, err := c.exec("systemctl", "status", "--no-pager", "--lines=20", service)
	if err != nil || !strings.Contains(statusOut, "rolled back") {
		t.Fatalf("%s: systemctl status does not show \"rolled back\" (%v):\n%s", what, err, statusOut)
	}
	t.Logf("%s: systemctl status:\n%s", what, statusOut)

	time.Sleep(settle)
	p2 := c.upgrade("v2", witness)
	t.Logf("after the good reload: StatusText %q", c.mustState(service).StatusText)
	time.Sleep(settle)
	r := l.stop()
	l.requireExact(r)
	l.requirePids(r, s.MainPID, p2)
	witness.expect("BAL 1000", "BALANCE", witnessAcct)
	requireSteady(c, s)
}

// requireSteady fails unless the service runs, never restarted since
// first, at the end of a scenario.
func requireSteady(c *container, first unitState) {
	c.t.Helper()
	end := c.mustState(service)
	if !running(end) || end.NRestarts != first.NRestarts {
		c.t.Fatalf("%s at the end: %v, want active/running with NRestarts %d as at the start", service, end, first.NRestarts)
	}
}
