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
// with the balances they had before the kill. The process killed is one
// that took over in a reload, and half the connections were accepted by
// it: the store must hold what the first process put there and what the
// second one added. At the end a stop is graceful and every held
// connection sees the close.
func TestCrashFDStore(t *testing.T) {
	c := boot(t)
	s := c.start()
	witness := dial(t, "e2e-witness")

	// Balances change under load, across a reload, then everything goes
	// quiet.
	l := startLoad(t)
	accts := dialAccounts(t, "e2e-crash-old", crashConns/2)
	changeBalances(accts)
	time.Sleep(settle)
	p2 := c.upgrade("v2", witness)
	accts = append(accts, dialAccounts(t, "e2e-crash-new", crashConns/2)...)
	changeBalances(accts)
	time.Sleep(settle)
	r := l.stop()
	l.requireExact(r)
	l.requirePids(r, s.MainPID, p2)

	time.Sleep(snapshotWait)
	for _, a := range accts {
		a.c.expect("BAL "+strconv.FormatInt(a.bal, 10), "BALANCE", a.name)
	}
	before := c.mustState(service)
	if !running(before) || before.NRestarts != 0 || before.MainPID != p2 {
		t.Fatalf("%s before the kill: %v, want active/running, MainPID %d, never restarted", service, before, p2)
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
	witness.requireServedBy("v2", after.MainPID)
	t.Logf("all %d connections held across the kill (%d accepted by pid %d, %d by pid %d) are served by pid %d with their balances",
		len(accts)+1, crashConns/2+1, s.MainPID, crashConns/2, p2, after.MainPID)

	// New connections are served too.
	l = startLoad(t)
	time.Sleep(settle)
	r = l.stop()
	l.requireExact(r)
	l.requirePids(r, after.MainPID)
	if end := c.mustState(service); !running(end) || end.NRestarts != 1 || end.MainPID != after.MainPID {
		t.Fatalf("%s at the end: %v, want still %v", service, end, after)
	}

	// A stop closes the store: the held connections see the close rather
	// than hang on a copy systemd keeps.
	c.stopGracefully(after.MainPID)
	for _, a := range append(accts, &account{c: witness}) {
		a.c.requireClosed()
	}
}

// dialAccounts dials n connections, each with an account of its own.
func dialAccounts(t testing.TB, prefix string, n int) []*account {
	t.Helper()
	accts := make([]*account, n)
	for i := range accts {
		gw := fmt.Sprintf("%s-%d", prefix, i)
		accts[i] = &account{c: dial(t, gw), name: gw + "-acct"}
	}
	return accts
}

// changeBalances tops up and charges every account a few times, each by
// different amounts.
func changeBalances(accts []*account) {
	for round := range 3 {
		for i, a := range accts {
			a.topup(int64(100*(i+1) + round))
			a.charge(int64(30 + i))
		}
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
