//go:build e2esystemd

package e2e

import (
	"strconv"
	"testing"
	"time"
)

// TestRestartKeepsConnections is scenario E: `systemctl restart` (a cold
// restart, not a reload) with the fd store. systemd 252 keeps the store
// across a restart job, so the clients keep their TCP connections: the
// stopping process saves the ledger on SIGTERM and exits without closing
// anything for its clients, and the new process takes back the listener,
// every connection and the saved ledger. Unlike a crash, nothing is lost:
// the balances are exactly what the clients were told, with no wait for a
// snapshot. The watchdog runs throughout (see watchdogDropIn).
func TestRestartKeepsConnections(t *testing.T) {
	c := boot(t)
	c.deploy("v2")
	s := c.start()
	accts := dialAccounts(t, "e2e-restart", crashConns)
	changeBalances(accts)

	begin := time.Now()
	c.must("systemctl", "restart", service)
	after := c.awaitState(service, "running again", func(st unitState) bool {
		return running(st) && st.MainPID != s.MainPID
	})
	t.Logf("systemctl restart: %s runs again in %v: %v", service, time.Since(begin).Round(time.Millisecond), after)
	c.requireSaved(s.MainPID)

	for _, a := range accts {
		a.c.expect("BAL "+strconv.FormatInt(a.bal, 10), "BALANCE", a.name)
		a.c.requireServedBy("v2", after.MainPID)
		a.topup(1)
	}
	t.Logf("all %d connections held across systemctl restart are served by pid %d with their exact balances",
		len(accts), after.MainPID)

	// Watchdog and all, the restarted process is an ordinary main process.
	time.Sleep(settle)
	if end := c.mustState(service); !running(end) || end.MainPID != after.MainPID {
		t.Fatalf("%s %v after the restart, want still %v", service, end, after)
	}
	c.stopGracefully(after.MainPID)
	for _, a := range accts {
		a.c.requireClosed()
	}
}
