//go:build linux

package handoff

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// slowRequest sends "sleep-<ms>" on a connection of its own and returns
// a channel that gets the pid that answered it, or "" if the connection
// ended without an answer.
func slowRequest(t *testing.T, addr string, ms int) (*conn, <-chan string) {
	t.Helper()
	return request(t, addr, fmt.Sprintf("sleep-%d", ms))
}

// heldRequest sends "hold-<name>" on a connection of its own and waits
// until the server holds it: it stays unanswered, its connection busy,
// until h.release("hold-<name>"). The channel gets the pid that answered
// it, or "" if the connection ended without an answer.
func heldRequest(t *testing.T, h *harness, name string) (*conn, <-chan string) {
	t.Helper()
	cl, got := request(t, h.addr, "hold-"+name)
	h.awaitPaused("hold-" + name)
	return cl, got
}

// request sends line on a connection of its own, once a first request
// on it has been served.
func request(t *testing.T, addr, req string) (*conn, <-chan string) {
	t.Helper()
	cl := dialConn(t, addr)
	if err := cl.round(1, false); err != nil { // served before the upgrade
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(cl.c, "%s\n", req); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		cl.c.SetReadDeadline(time.Now().Add(120 * time.Second)) // a safety net
		line, err := cl.r.ReadString('\n')
		f := strings.Fields(line)
		if err != nil || len(f) != 3 || f[0] != req {
			got <- ""
			return
		}
		cl.sent, cl.got = cl.sent+1, cl.got+1
		got <- f[2]
	}()
	return cl, got
}

// TestRollingUpgrades: in Rolling mode every connection of a pipelining
// load moves to each new process, every request answered exactly once and
// in order, across three upgrades, with new connections coming all along.
func TestRollingUpgrades(t *testing.T) {
	h := startInProcess(t, envRolling+"=1")
	l := startLoad(t, h.addr, 300)
	pids := []int{h.pid}
	for i := 0; i < 3; i++ {
		l.waitRounds(500)
		p, fail := h.upgrade()
		if p == 0 {
			t.Fatalf("upgrade %d failed: %s", i+1, fail)
		}
		if moved, _ := strconv.Atoi(h.exit[3]); moved < 300 || h.exit[2] != "0" {
			t.Fatalf("old process's exit %v: want >= 300 connections moved, none kept", h.exit)
		}
		pids = append(pids, p)
		l.waitServedBy(p)
	}
	l.waitRounds(500)
	l.stop()
	l.requireAllOn(pids...)
}

// TestRollingNoGlobalPause: a request in flight holds up its own
// connection only. While it runs in the old process, the other
// connections have moved and the new process answers them; then it is
// answered by the old process and its connection moves too.
func TestRollingNoGlobalPause(t *testing.T) {
	h := startInProcess(t, envRolling+"=1")
	old := h.pid
	slow, answer := heldRequest(t, h, "slow")
	other := dialConn(t, h.addr)
	if err := other.round(2, false); err != nil {
		t.Fatal(err)
	}
	if err := h.kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ready := h.expect("ready")
	newPid := ready[1]
	// Until the new process answers other, the slow request must not
	// have been answered: other did not wait for it.
	for !other.pids[newPid] {
		select {
		case pid := <-answer:
			t.Fatalf("the slow request was answered (by %q) before the other connection moved", pid)
		default:
		}
		if err := other.round(1, false); err != nil {
			t.Fatal(err)
		}
	}
	h.release("hold-slow")
	if pid := <-answer; pid != strconv.Itoa(old) {
		t.Fatalf("slow request answered by %q, want the old process %d", pid, old)
	}
	h.expect("exit")
	h.pid, _ = strconv.Atoi(newPid)
	if err := slow.round(2, true); err != nil {
		t.Fatalf("slow connection after its request: %v", err)
	}
	if !slow.pids[newPid] {
		t.Fatalf("slow connection served by %v after the move, want %s", slow.pids, newPid)
	}
}

// TestRollingStragglers: a connection that does not reach a boundary
// within MoveTimeout stays with the old process, which answers its request
// and drains it (DrainStragglers); or it is closed (CloseStragglers).
func TestRollingStragglers(t *testing.T) {
	for _, closeThem := range []bool{false, true} {
		t.Run(fmt.Sprintf("close=%t", closeThem), func(t *testing.T) {
			t.Parallel()
			// Long enough for the load's connections to move on a loaded
			// machine; the straggler is held past it.
			env := []string{envRolling + "=1", envMoveTimeout + "=5s"}
			if closeThem {
				env = append(env, envCloseStragglers+"=1")
			}
			h := startInProcess(t, env...)
			old := h.pid
			slow, answer := heldRequest(t, h, "slow")
			l := startLoad(t, h.addr, 20)
			l.waitRounds(100)
			p, fail := h.upgrade()
			if p == 0 {
				t.Fatalf("upgrade failed: %s", fail)
			}
			if h.exit[2] != "1" && !closeThem {
				t.Fatalf("old process's exit %v: want the straggler kept", h.exit)
			}
			h.release("hold-slow")
			got := <-answer
			switch {
			case closeThem && got != "":
				t.Fatalf("straggler answered by %s after its connection was closed", got)
			case !closeThem && got != strconv.Itoa(old):
				t.Fatalf("straggler answered by %q, want the old process %d", got, old)
			}
			if !closeThem {
				// It stays with the old process, which serves it until the
				// client goes.
				if err := slow.round(1, false); err != nil || !slow.pids[strconv.Itoa(old)] {
					t.Fatalf("drained connection: %v, served by %v", err, slow.pids)
				}
				slow.c.Close()
				h.expect("drained")
			}
			l.waitServedBy(p)
			l.stop()
			l.requireAllOn(old, p)
		})
	}
}

// TestRollingNewDiesMidMove: the new process dies once the first
// connections have moved. The old process takes the listener back: the
// connections it still had (here, those busy with a slow request) are
// answered and served on by it, new connections reach it, the PID file
// names it, and a later upgrade moves everything.
func TestRollingNewDiesMidMove(t *testing.T) {
	h := startInProcess(t, envRolling+"=1")
	old := h.pid
	var slow []*conn
	var answers []<-chan string
	for i := 0; i < 5; i++ {
		c, a := heldRequest(t, h, "slow")
		slow, answers = append(slow, c), append(answers, a)
	}
	l := startLoad(t, h.addr, 50)
	l.waitRounds(100)
	h.setFault("exit:move")
	p, fail := h.upgrade()
	if p != 0 || !strings.Contains(fail, "failed during the rolling move") {
		t.Fatalf("upgrade: new pid %d, %q; want it to fail during the move", p, fail)
	}
	if got := h.pidFile(); got != old {
		t.Fatalf("PID file names %d after the take-back, want %d", got, old)
	}
	h.release("hold-slow")
	for i, a := range answers {
		if got := <-a; got != strconv.Itoa(old) {
			t.Fatalf("slow request %d answered by %q, want the old process %d", i, got, old)
		}
		if err := slow[i].round(2, true); err != nil || len(slow[i].pids) != 1 {
			t.Fatalf("slow connection %d after the take-back: %v, served by %v", i, err, slow[i].pids)
		}
	}
	fresh := dialConn(t, h.addr)
	if err := fresh.round(2, false); err != nil || !fresh.pids[strconv.Itoa(old)] {
		t.Fatalf("new connection after the take-back: %v, served by %v", err, fresh.pids)
	}
	// The load's connections that had moved died with the new process;
	// none may have had a wrong reply.
	l.halt()

	h.setFault("")
	p, fail = h.upgrade()
	if p == 0 {
		t.Fatalf("upgrade after the take-back failed: %s", fail)
	}
	for i, c := range append(slow, fresh) {
		if err := c.round(2, true); err != nil || !c.pids[strconv.Itoa(p)] {
			t.Fatalf("connection %d after the second upgrade: %v, served by %v", i, err, c.pids)
		}
	}
}

// TestRollingStopNewDuringMove: a stop sent to the new process (the PID
// file names it from the commit) while connections are still moving
// waits for the move to end, so that one process owns the state: the old
// one hands its last connection over and exits, then the new one stops
// and saves. Before, the new process saved at once and the old one took
// the service back, serving on after the stop with a state of its own.
func TestRollingStopNewDuringMove(t *testing.T) {
	h := startInProcess(t, envRolling+"=1")
	old := h.pid
	_, answer := heldRequest(t, h, "slow")
	if err := h.kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	newPid, _ := strconv.Atoi(h.expect("ready")[1])
	if err := h.kill(newPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The held request keeps the move open until the stop is waiting.
	h.stopLogged("stop during a rolling move: waiting for the move to end")
	h.release("hold-slow")
	var order []string
	for len(order) < 2 {
		f := h.next()
		switch f[0] {
		case "failed":
			t.Fatalf("the old process took the service back after the new one was stopped: %v", f)
		case "exit", "saved", "stopped":
			order = append(order, f[0]+" "+f[1])
		}
	}
	want := []string{fmt.Sprintf("exit %d", old), fmt.Sprintf("saved %d", newPid)}
	if order[0] != want[0] || order[1] != want[1] {
		t.Fatalf("events %v, want %v: the old process hands over, then the new one saves", order, want)
	}
	if pid := <-answer; pid != strconv.Itoa(old) {
		t.Fatalf("slow request answered by %q, want the old process %d", pid, old)
	}
}

// TestParkTimeoutCause: an upgrade that fails because a connection
// reaches no message boundary within the park timeout says so, with a
// cause of its own (park_timeout), not "other"; the held request is then
// answered by the old process.
func TestParkTimeoutCause(t *testing.T) {
	h := startInProcess(t)
	old := h.pid
	_, answer := heldRequest(t, h, "slow")
	p, fail := h.upgrade()
	if p != 0 {
		t.Fatalf("pid %d took over with a connection that never parked", p)
	}
	if !strings.Contains(fail, "did not park within the park timeout (2s)") {
		t.Fatalf("rolled back for %q, want the park timeout", fail)
	}
	h.stopLogged("cause=" + CauseParkTimeout)
	h.release("hold-slow")
	if got := <-answer; got != strconv.Itoa(old) {
		t.Fatalf("held request answered by %q, want the old process %d", got, old)
	}
}
