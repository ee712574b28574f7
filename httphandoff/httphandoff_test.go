//go:build linux

package httphandoff

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKeepAliveSurvivesUpgrades: keep-alive connections of clients that
// never reconnect are answered by each new process, across ten upgrades,
// with not one error, and idle ones move too.
func TestKeepAliveSurvivesUpgrades(t *testing.T) {
	h := startChain(t)
	clients := make([]*client, 20)
	for i := range clients {
		clients[i] = h.dial()
		if pid := clients[i].get("/"); pid != h.pid {
			t.Fatalf("answered by %d, want %d", pid, h.pid)
		}
	}
	fresh := h.dial() // connected, never sent a byte
	for u := 0; u < 10; u++ {
		p := h.upgrade()
		for i, c := range clients {
			if pid := c.get("/"); pid != p {
				t.Fatalf("upgrade %d, client %d: answered by %d, want the new process %d", u+1, i, pid, p)
			}
		}
	}
	if pid := fresh.get("/"); pid != h.pid {
		t.Fatalf("a connection that sent nothing before ten upgrades was answered by %d, want %d", pid, h.pid)
	}
}

// TestRequestInFlight: a request being served when the upgrade starts is
// answered by the old process; the connection then moves.
func TestRequestInFlight(t *testing.T) {
	h := startChain(t)
	c := h.dial()
	old := h.pid
	c.send("GET /slow?ms=500 HTTP/1.1\r\nHost: t\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	done := h.upgradeInBackground()
	if pid := c.expectOK(); pid != old {
		t.Fatalf("the request in flight was answered by %d, want the old process %d", pid, old)
	}
	c.requireMovedTo(<-done)
}

// TestPipelined: two requests written at once, the first slow, an upgrade
// in between: each is answered exactly once, in order, and the connection
// ends up in the new process.
func TestPipelined(t *testing.T) {
	h := startChain(t)
	c := h.dial()
	c.send("GET /slow?ms=300 HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nsecond")
	time.Sleep(50 * time.Millisecond)
	done := h.upgradeInBackground()
	c.expectOK()
	status, body, err := c.response()
	if err != nil || status != http.StatusOK || !strings.HasSuffix(body, " second") {
		t.Fatalf("the pipelined request: %d %q %v", status, body, err)
	}
	c.requireMovedTo(<-done)
	c.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _ := c.r.Peek(1); len(n) > 0 {
		t.Fatalf("an extra response: %q", n)
	}
}

// TestHeadInPieces: a request whose first bytes arrived before the
// upgrade and the rest after it is answered once, by the new process: the
// bytes net/http had read ahead moved with the connection.
func TestHeadInPieces(t *testing.T) {
	for _, first := range []string{"G", "GE", "GET"} {
		t.Run(first, func(t *testing.T) {
			h := startChain(t)
			c := h.dial()
			c.get("/") // idle now
			c.send(first)
			time.Sleep(50 * time.Millisecond)
			p := h.upgrade()
			c.send(strings.TrimPrefix("GET / HTTP/1.1\r\nHost: t\r\n\r\n", first))
			if pid := c.expectOK(); pid != p {
				t.Fatalf("answered by %d, want the new process %d", pid, p)
			}
		})
	}
}

// TestPartialHeadFinishesFirst: a request head cut in the middle of its
// first line cannot move (net/http has parsed part of it): the upgrade
// waits for it, it is answered once, and the connection moves after.
func TestPartialHeadFinishesFirst(t *testing.T) {
	h := startChain(t)
	c := h.dial()
	c.send("GET / HTTP/1.1\r\nHo")
	time.Sleep(50 * time.Millisecond)
	old := h.pid
	done := h.upgradeInBackground()
	time.Sleep(300 * time.Millisecond)
	c.send("st: t\r\n\r\n")
	if pid := c.expectOK(); pid != old {
		t.Fatalf("answered by %d, want the old process %d", pid, old)
	}
	c.requireMovedTo(<-done)
}

// TestExpectContinue: a POST that waits for 100 Continue when the upgrade
// starts sends its body after, and is answered once, by the old process.
func TestExpectContinue(t *testing.T) {
	h := startChain(t)
	c := h.dial()
	old := h.pid
	c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	done := h.upgradeInBackground()
	time.Sleep(200 * time.Millisecond)
	c.send("hello")
	status, body, err := c.response()
	if err == nil && status == http.StatusContinue {
		status, body, err = c.response()
	}
	if err != nil || status != http.StatusOK || body != fmt.Sprintf("%d hello", old) {
		t.Fatalf("response %d %q %v, want 200 from %d with the body", status, body, err, old)
	}
	c.requireMovedTo(<-done)
}

// TestNewProcessDies: an upgrade into a process that exits rolls back;
// every connection, moved or not, is served on by the old process, which
// then upgrades fine.
func TestNewProcessDies(t *testing.T) {
	h := startChain(t)
	clients := make([]*client, 10)
	for i := range clients {
		clients[i] = h.dial()
		clients[i].get("/")
	}
	failFile := filepath.Join(h.dir, "fail")
	os.WriteFile(failFile, nil, 0o600)
	syscall.Kill(h.pid, syscall.SIGHUP)
	h.await("failed")
	for i, c := range clients {
		if pid := c.get("/"); pid != h.pid {
			t.Fatalf("client %d answered by %d after a rollback, want %d", i, pid, h.pid)
		}
	}
	os.Remove(failFile)
	p := h.upgrade()
	for i, c := range clients {
		if pid := c.get("/"); pid != p {
			t.Fatalf("client %d answered by %d, want %d", i, pid, p)
		}
	}
}

// TestUnderLoad: 50 keep-alive clients send requests back to back across
// three upgrades; every request is answered exactly once with a 200 and
// its own body, and no connection fails.
func TestUnderLoad(t *testing.T) {
	t.Run("all-at-once", func(t *testing.T) { underLoad(t) })
	t.Run("rolling", func(t *testing.T) { underLoad(t, envRoll+"=1") })
}

func underLoad(t *testing.T, env ...string) {
	h := startChain(t, env...)
	const n = 50
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	pids := make([]map[int]bool, n)
	for i := 0; i < n; i++ {
		c := h.dial()
		pids[i] = map[int]bool{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				want := fmt.Sprintf("c%d-r%d", i, k)
				c.send(fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s", len(want), want))
				status, body, err := c.response()
				f := strings.Fields(body)
				if err != nil || status != http.StatusOK || len(f) != 2 || f[1] != want {
					errs <- fmt.Errorf("client %d request %d: %d %q %v", i, k, status, body, err)
					return
				}
				var pid int
				fmt.Sscan(f[0], &pid)
				pids[i][pid] = true
			}
		}(i)
	}
	for u := 0; u < 3; u++ {
		time.Sleep(200 * time.Millisecond)
		h.upgrade()
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range pids {
		if !pids[i][h.pid] {
			t.Fatalf("client %d was never served by the last process %d: %v", i, h.pid, pids[i])
		}
	}
}

// TestSlowRequestRollsBack: a request that outlasts ParkTimeout (3 s in
// these servers) keeps its connection from leaving, so the upgrade rolls
// back: the slow request is answered, and every connection that had
// already left (idle ones, a fresh one) is served on by the old process
// as if nothing happened. The next upgrade, with nothing slow, commits.
func TestSlowRequestRollsBack(t *testing.T) {
	h := startChain(t)
	idle := make([]*client, 5)
	for i := range idle {
		idle[i] = h.dial()
		idle[i].get("/")
	}
	fresh := h.dial()
	slow := h.dial()
	old := h.pid
	slow.send("GET /slow?ms=4000 HTTP/1.1\r\nHost: t\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	syscall.Kill(old, syscall.SIGHUP)
	if ev := strings.Join(h.await("failed"), " "); !strings.Contains(ev, "park") {
		t.Fatalf("the upgrade failed for another reason than the park: %s", ev)
	}
	if pid := slow.expectOK(); pid != old {
		t.Fatalf("the slow request was answered by %d, want %d", pid, old)
	}
	for i, c := range idle {
		if pid := c.get("/"); pid != old {
			t.Fatalf("idle client %d answered by %d after the rollback, want %d", i, pid, old)
		}
	}
	if pid := fresh.get("/"); pid != old {
		t.Fatalf("the fresh connection was answered by %d after the rollback, want %d", pid, old)
	}
	p := h.upgrade()
	for _, c := range append(idle, fresh, slow) {
		if pid := c.get("/"); pid != p {
			t.Fatalf("answered by %d, want the new process %d", pid, p)
		}
	}
}

// TestSlowRequestRolling: in Rolling mode a request that outlasts
// ParkTimeout holds up its own connection only. The upgrade commits; the
// idle and fresh connections are answered by the new process while the
// slow request runs in the old one; then the slow connection moves too.
func TestSlowRequestRolling(t *testing.T) {
	h := startChain(t, envRoll+"=1")
	idle := make([]*client, 5)
	for i := range idle {
		idle[i] = h.dial()
		idle[i].get("/")
	}
	fresh := h.dial()
	slow := h.dial()
	old := h.pid
	slow.send("GET /slow?ms=4000 HTTP/1.1\r\nHost: t\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	syscall.Kill(old, syscall.SIGHUP)
	var p int
	fmt.Sscan(h.await("ready")[1], &p)
	for i, c := range append(idle, fresh) {
		for pid := c.get("/"); pid != p; pid = c.get("/") {
			if pid != old {
				t.Fatalf("client %d answered by %d, want %d or %d", i, pid, old, p)
			}
		}
	}
	// The upgrade committed with the slow request in flight (all at once,
	// it would have rolled back at ParkTimeout), and the old process
	// answers it.
	if pid := slow.expectOK(); pid != old {
		t.Fatalf("the slow request was answered by %d, want %d", pid, old)
	}
	h.await("exit")
	h.pid = p
	if pid := slow.get("/"); pid != p {
		t.Fatalf("the slow connection answered by %d after the move, want %d", pid, p)
	}
}

// TestHijackedConnection: a connection an http.Handler hijacked (for a
// protocol of its own, as a WebSocket does) is the application's: it
// parks it through the library at its own message boundary, and the new
// process's Resume serves it by the state it parked with.
func TestHijackedConnection(t *testing.T) {
	h := startChain(t)
	c := h.dial()
	c.send("GET /ws HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade to lines: %v %v", resp, err)
	}
	line := func(s string) string {
		c.send(s + "\n")
		c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("line %q: %v", s, err)
		}
		return strings.TrimSpace(got)
	}
	if got := line("one"); got != fmt.Sprintf("%d one", h.pid) {
		t.Fatalf("got %q", got)
	}
	p := h.upgrade()
	if got := line("two"); got != fmt.Sprintf("%d two", p) {
		t.Fatalf("after the upgrade got %q, want the new process %d", got, p)
	}
}

// TestIdleTimeoutCarried: a connection idle across upgrades times out as
// it would without them. The server's IdleTimeout is 1 s and an upgrade
// comes every 300 ms for 3 s: if each new process started the idle timer
// anew, the connection would never time out. It must be closed (by the
// process that serves it, quietly: EOF, no reply), while a connection that
// keeps sending is served throughout.
func TestIdleTimeoutCarried(t *testing.T) {
	h := startChain(t, envIdle+"=1s")
	idle, busy := h.dial(), h.dial()
	idle.get("/")
	for i := 0; i < 10; i++ {
		time.Sleep(300 * time.Millisecond)
		busy.get("/")
		h.upgrade()
	}
	idle.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := idle.r.ReadByte(); err == nil {
		t.Fatalf("the idle connection got %q; want it closed by its idle timeout", b)
	} else if !errors.Is(err, io.EOF) {
		t.Fatalf("the idle connection: %v; want EOF from its idle timeout", err)
	}
	if pid := busy.get("/"); pid != h.pid {
		t.Fatalf("busy connection answered by %d, want %d", pid, h.pid)
	}
}
