package app

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
)

// TestRollingStopAfterTakeover: as an independent fault probe did, SIGTERM
// to the new process of a rolling upgrade the moment it logs that it took
// over, while the connections move to it, carrying the accounts their
// clients changed after the snapshot. The stop waits for the move and for
// every moved connection's accounts to be set in the ledger: the state
// file it saves holds every balance a client was told. A race, not a
// barrier (the example has no hook inside Resume): the probe lost writes
// in 4 of 11 such stops, but with the library's wait disabled this test
// lost none in 8 trials on a 2-core machine. It checks the whole path
// end to end; the library's TestStopNewJustAfterRollingMove holds the
// moment exactly and fails without the wait.
func TestRollingStopAfterTakeover(t *testing.T) {
	for trial := range 2 {
		t.Run(strconv.Itoa(trial), rollingStopTrial)
	}
}

func rollingStopTrial(t *testing.T) {
	p := startPDF(t, modeRolling)
	var clients []*ownAccount
	for i := range 30 {
		clients = append(clients, newOwnAccount(t, p.addr, fmt.Sprintf("gw%d", i)))
	}
	stop := make(chan struct{})
	for _, c := range clients {
		go c.run(stop)
	}
	defer close(stop)
	awaitRequests(t, clients, 20)
	mark := p.logs.len()
	if err := syscall.Kill(p.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line := p.logs.await(t, mark, "handoff: took over", -p.pid)
	newPid, _ := strconv.Atoi(field(line, "pid"))
	p.stop(t, newPid) // and wait until every process has exited
	p.logs.await(t, mark, "state saved", newPid)
	saved := savedLedger(t, p.state)
	for _, c := range clients {
		<-c.done
		if c.err != nil && strings.Contains(c.err.Error(), "want") {
			t.Fatalf("%s: %v", c.acct, c.err)
		}
		if got := saved.Balance(c.acct); !c.couldHave(got) {
			t.Errorf("%s: the state file holds %d; the client was told %d (last request %d, ended by %v)",
				c.acct, got, c.balance, c.n, c.err)
		}
	}
}

// couldHave reports whether a saved balance holds every change the client
// was told of: its last acknowledged balance, or, if the connection ended
// with a request unanswered, that request's result.
func (c *ownAccount) couldHave(saved int64) bool {
	if saved == c.balance {
		return true
	}
	if c.err == nil {
		return false
	}
	inFlight := c.balance + 1 // TOPUP 1
	if c.n%5 == 0 {
		inFlight = c.balance - 1 // CHARGE 1
	}
	return saved == inFlight
}

// savedLedger reads a state file as v2's ledger.
func savedLedger(t *testing.T, path string) *ledger.V2 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, _, err := ledger.States.Load(f, ledger.Schema2)
	if err != nil {
		t.Fatal(err)
	}
	return l.(*ledger.V2)
}
