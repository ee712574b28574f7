//go:build e2esystemd

package e2e

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// Scenario D's shape.
const (
	crashConns = 32
	// snapshotWait is how long the quiet service runs before the kill: the
	// unit snapshots every second, so at least two snapshots follow the
	// last change.
	snapshotWait = 2500 * time.Millisecond
)

// account is one balance a crash connection changes, with the balance
// its own requests imply.
type account struct {
	c    *client
	name string
	bal  int64
}

// TestCrashFDStore is scenario D: the service is killed with SIGKILL
// while its clients are quiet, after a snapshot; systemd restarts it
// (NRestarts 1, a new MainPID) and hands it the fd store, and the same
// client connections, never redialled, are served by the new process
// with the balances they had before the kill.
func TestCrashFDStore(t *testing.T) {
	c := boot(t)
	c.deploy("v2")
	s := c.start()

	accts := make([]*account, crashConns)
	for i := range accts {
		gw := fmt.Sprintf("e2e-crash-%d", i)
		accts[i] = &account{c: dial(t, gw), name: gw + "-acct"}
	}
	// Balances change under load, then everything goes quiet.
	l := startLoad(t)
	for round := range 4 {
		for i, a := range accts {
			a.topup(int64(100*(i+1) + round))
			a.charge(int64(30 + i))
		}
	}
	time.Sleep(settle)
	r := l.stop()
	l.requireExact(r)
	l.requirePids(r, s.MainPID)

	time.Sleep(snapshotWait)
	for _, a := range accts {
		a.c.expect("BAL "+strconv.FormatInt(a.bal, 10), "BALANCE", a.name)
	}
	before := c.mustState(service)
	if !running(before) || before.NRestarts != 0 {
		t.Fatalf("%s before the kill: %v, want active/running, never restarted", service, before)
	}
	begin := time.Now()
	c.must("sh", "-c", "kill -9 "+strconv.Itoa(before.MainPID))
	after := c.awaitState(service, "restarted once", func(st unitState) bool {
		return running(st) && st.NRestarts == 1 && st.MainPID != before.MainPID
	})
	t.Logf("SIGKILL to MainPID %d: systemd restarted %s in %v: %v", before.MainPID, service,
		time.Since(begin).Round(time.Millisecond), after)

	for _, a := range accts {
		a.c.expect("BAL "+strconv.FormatInt(a.bal, 10), "BALANCE", a.name)
		a.c.requireServedBy("v2", after.MainPID)
		a.topup(1)
	}
	t.Logf("all %d connections held across the kill are served by pid %d with their balances", crashConns, after.MainPID)

	// New connections are served too.
	l = startLoad(t)
	time.Sleep(settle)
	r = l.stop()
	l.requireExact(r)
	l.requirePids(r, after.MainPID)
	if end := c.mustState(service); !running(end) || end.NRestarts != 1 || end.MainPID != after.MainPID {
		t.Fatalf("%s at the end: %v, want still %v", service, end, after)
	}
}

func (a *account) topup(amount int64) {
	a.c.t.Helper()
	a.bal += amount
	a.c.expect("OK "+strconv.FormatInt(a.bal, 10), "TOPUP", a.name, strconv.FormatInt(amount, 10))
}

// charge charges amount, which the balance must cover.
func (a *account) charge(amount int64) {
	a.c.t.Helper()
	if amount > a.bal {
		a.c.t.Fatalf("test bug: charge %d on a balance of %d", amount, a.bal)
	}
	a.bal -= amount
	a.c.expect("OK "+strconv.FormatInt(a.bal, 10), "CHARGE", a.name, strconv.FormatInt(amount, 10))
}
