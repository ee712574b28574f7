//go:build e2esystemd

package e2e

import (
	"testing"
	"time"
)

const socketUnit = "pdf.socket"

// TestSocketActivation is scenario C: with pdf.service stopped (its
// ledger saved) and pdf.socket alone started, the first client connection
// starts the service, which serves the saved ledger; then two reloads
// under load, with no dial refused and every reply exact; stopped again
// (gracefully, the last process saving), the service is started by the
// next connection with the saved ledger; no failure in the journal.
func TestSocketActivation(t *testing.T) {
	requireUnit(t, socketUnit)
	c := boot(t)
	s := c.start()
	first := dial(t, "e2e-first")
	first.requireServedBy("v1", s.MainPID)
	first.expect("OK 1000", "TOPUP", witnessAcct, "1000")
	first.expect("OK 900", "CHARGE", witnessAcct, "100")
	first.nc.Close()

	c.must("systemctl", "stop", service)
	if st := c.mustState(service); st.Active != "inactive" {
		t.Fatalf("after systemctl stop: %s is %v, want inactive", service, st)
	}
	c.must("systemctl", "start", socketUnit)
	if st := c.mustState(socketUnit); st.Active != "active" || st.Sub != "listening" {
		t.Fatalf("after systemctl start %s: it is %s/%s, want active/listening", socketUnit, st.Active, st.Sub)
	}
	if st := c.mustState(service); st.Active != "inactive" {
		t.Fatalf("%s is %v before any connection, want inactive (only %s was started)", service, st, socketUnit)
	}

	begin := time.Now()
	witness := dial(t, "e2e-witness") // the first connection: it starts the service
	s = c.awaitState(service, "running", running)
	t.Logf("the first connection started %s in %v: %v", service, time.Since(begin).Round(time.Millisecond), s)
	witness.requireServedBy("v1", s.MainPID)
	witness.expect("BAL 900", "BALANCE", witnessAcct)

	p3 := c.reloadTwiceUnderLoad(s, witness)
	if st := c.mustState(socketUnit); st.Active != "active" {
		t.Fatalf("%s after the reloads: %s/%s, want active", socketUnit, st.Active, st.Sub)
	}

	// Stopped after upgrades, the service saves; the socket stays and the
	// next connection starts it again, with the saved ledger.
	witness.nc.Close()
	c.stopGracefully(p3)
	if st := c.mustState(socketUnit); st.Active != "active" || st.Sub != "listening" {
		t.Fatalf("%s after the service stopped: %s/%s, want active/listening", socketUnit, st.Active, st.Sub)
	}
	again := dial(t, "e2e-again")
	s = c.awaitState(service, "running", running)
	again.requireServedBy("v2", s.MainPID)
	again.expect("STATS 900 1", "STATS", witnessAcct)
	c.requireCleanJournal()
}
