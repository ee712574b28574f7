//go:build linux

package handoff

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// conn is one client connection of a load: it pipelines numbered requests,
// often leaving the last one half-sent for a moment, and checks that each
// is answered exactly once, in order, with the connection's request count
// continuing across upgrades.
type conn struct {
	c     net.Conn
	r     *bufio.Reader
	sent  int
	got   int
	mu    sync.Mutex // guards pids, read by waitServedBy while the load runs
	pids  map[string]bool
	acked *atomic.Int64 // the load's count of replies received, if any
}

// errMismatch marks a reply that is wrong: lost, repeated or reordered
// requests, or a count that did not continue.
var errMismatch = errors.New("wrong reply")

func (cl *conn) round(k int, half bool) error {
	var b strings.Builder
	for i := 0; i < k; i++ {
		fmt.Fprintf(&b, "req-%d\n", cl.sent+i)
	}
	tail := ""
	if half {
		tail = fmt.Sprintf("req-%d\n", cl.sent+k)
		cut := len(tail) / 2
		b.WriteString(tail[:cut])
		tail = tail[cut:]
		k++
	}
	if _, err := cl.c.Write([]byte(b.String())); err != nil {
		return err
	}
	if half {
		time.Sleep(time.Millisecond)
		if _, err := cl.c.Write([]byte(tail)); err != nil {
			return err
		}
	}
	cl.sent += k
	return cl.receive()
}

func (cl *conn) receive() error {
	cl.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for cl.got < cl.sent {
		line, err := cl.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reply %d of %d: %w", cl.got, cl.sent, err)
		}
		f := strings.Fields(line)
		want := fmt.Sprintf("req-%d", cl.got)
		if len(f) != 3 || f[0] != want || f[1] != strconv.Itoa(cl.got) {
			return fmt.Errorf("%w: %q, want %q with count %d", errMismatch, strings.TrimSpace(line), want, cl.got)
		}
		cl.mu.Lock()
		cl.pids[f[2]] = true
		cl.mu.Unlock()
		cl.got++
		if cl.acked != nil {
			cl.acked.Add(1)
		}
	}
	return nil
}

// load keeps n connections busy and a stream of new connections coming
// until stop.
type load struct {
	t       *testing.T
	addr    string
	conns   []*conn
	stopC   chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
	dialed  atomic.Int64
	refused atomic.Int64
	rounds  atomic.Int64
	acked   atomic.Int64 // replies received, over every connection
	sent    atomic.Int64 // requests sent, over every connection
}

// startLoad drives n long connections and a stream of short ones.
func startLoad(t *testing.T, addr string, n int) *load {
	l := startSteadyLoad(t, addr, n)
	l.wg.Add(1)
	go l.churn()
	return l
}

// startSteadyLoad is startLoad without the stream of short connections:
// what one of them changes in the old process after a Rolling upgrade's
// snapshot ends with it, and reaches no successor.
func startSteadyLoad(t *testing.T, addr string, n int) *load {
	l := &load{t: t, addr: addr, stopC: make(chan struct{})}
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		cl := &conn{c: c, r: bufio.NewReader(c), pids: map[string]bool{}, acked: &l.acked}
		l.conns = append(l.conns, cl)
		l.wg.Add(1)
		go l.drive(cl, i)
	}
	return l
}

func (l *load) fail(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *load) drive(cl *conn, i int) {
	defer l.wg.Done()
	for r := 0; ; r++ {
		select {
		case <-l.stopC:
			return
		default:
		}
		k, half := 1+(i+r)%8, (i+r)%3 == 0
		l.sent.Add(int64(k))
		if half {
			l.sent.Add(1)
		}
		if err := cl.round(k, half); err != nil {
			l.fail(fmt.Errorf("conn %d: %w", i, err))
			return
		}
		l.rounds.Add(1)
	}
}

// churn opens short connections one after another: none may be refused.
func (l *load) churn() {
	defer l.wg.Done()
	for {
		select {
		case <-l.stopC:
			return
		default:
		}
		l.dialed.Add(1)
		c, err := net.Dial("tcp", l.addr)
		if err != nil {
			l.refused.Add(1)
			l.fail(fmt.Errorf("new connection: %w", err))
			continue
		}
		cl := &conn{c: c, r: bufio.NewReader(c), pids: map[string]bool{}, acked: &l.acked}
		l.sent.Add(3)
		if err := cl.round(2, true); err != nil {
			l.fail(fmt.Errorf("new connection: %w", err))
		}
		c.Close()
	}
}

// waitRounds lets the load make progress, so that upgrades meet traffic.
func (l *load) waitRounds(n int64) {
	target := l.rounds.Load() + n
	// And every connection answered once: rounds are counted over all of
	// them, and a test that asks each to have been served by the first
	// process (requireAllOn) must not upgrade before a slow one was.
	for l.rounds.Load() < target || !l.everyConnServed() {
		select {
		case <-l.stopC:
			return
		case <-time.After(time.Millisecond):
		}
		if len(l.errors()) > 0 {
			return
		}
	}
}

// halt ends a load whose server is being stopped: connections that end
// are expected, but no reply may have been wrong.
func (l *load) halt() {
	close(l.stopC)
	l.wg.Wait()
	for _, err := range l.errors() {
		if errors.Is(err, errMismatch) {
			l.t.Error(err)
		}
	}
}

func (l *load) errors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// stop ends the load and fails the test on any lost, repeated, reordered
// or refused request.
func (l *load) stop() {
	close(l.stopC)
	l.wg.Wait()
	for i, err := range l.errors() {
		if i < 10 {
			l.t.Error(err)
		}
	}
	if l.dialed.Load() == 0 {
		l.t.Error("no new connections were made")
	}
}

// requireAllOn fails the test unless every connection of the load was
// served by every one of pids: none was lost along the chain.
// waitServedBy lets the load run until every connection has had a reply
// from pid (bounded: requireAllOn then says which did not).
func (l *load) waitServedBy(pid int) {
	p := strconv.Itoa(pid)
	for i := 0; i < 30000 && len(l.errors()) == 0; i++ {
		if l.allServedBy(p) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (l *load) everyConnServed() bool {
	for _, cl := range l.conns {
		cl.mu.Lock()
		n := len(cl.pids)
		cl.mu.Unlock()
		if n == 0 {
			return false
		}
	}
	return true
}

func (l *load) allServedBy(pid string) bool {
	for _, cl := range l.conns {
		cl.mu.Lock()
		ok := cl.pids[pid]
		cl.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

func (l *load) requireAllOn(pids ...int) {
	l.t.Helper()
	seen := map[string]int{}
	for _, cl := range l.conns {
		for p := range cl.pids {
			seen[p]++
		}
	}
	for _, p := range pids {
		if seen[strconv.Itoa(p)] != len(l.conns) {
			l.t.Fatalf("connections per server pid: %v, want all %d on each of %v", seen, len(l.conns), pids)
		}
	}
}

// TestUpgradeKeepsConnections: an upgrade under load, in one process.
func TestUpgradeKeepsConnections(t *testing.T) {
	h := startInProcess(t)
	l := startLoad(t, h.addr, 50)
	l.waitRounds(200)
	old := h.pid
	newPid, fail := h.upgrade()
	if newPid == 0 {
		t.Fatalf("upgrade failed: %s", fail)
	}
	l.waitServedBy(newPid)
	l.stop()
	l.requireAllOn(old, newPid)
	// The old process timed every phase, and counted what it handed over.
	if handed, _ := strconv.Atoi(h.exit[3]); handed < 50 || h.exit[4] != "true" {
		t.Fatalf("old process's exit %v: want >= 50 connections handed over and every phase timed", h.exit)
	}
}

func TestTwoUpgradesUnderLoad(t *testing.T) {
	h := startServer(t)
	// More than one CONNS frame (253 fds each) per upgrade.
	l := startLoad(t, h.addr, 300)
	pids := []int{h.pid}
	for i := 0; i < 2; i++ {
		l.waitRounds(500)
		p, fail := h.upgrade()
		if p == 0 {
			t.Fatalf("upgrade %d failed: %s", i+1, fail)
		}
		pids = append(pids, p)
		l.waitServedBy(p)
	}
	l.waitRounds(500)
	l.stop()
	l.requireAllOn(pids...)
}

// TestRollback makes the new process fail at every step of the handoff and
// checks that the old one rolls back for that reason, resumes every
// connection where it stopped and leaves the PID file naming itself; then
// that a good upgrade still works. A fault at a step of the takeover runs
// in one process (the fake kernel, LoadState or a tap on the channel
// reaches the step); one that changes the process (its protocol version,
// its fd limit) in real processes.
func TestRollback(t *testing.T) {
	inProcess := map[string]bool{"exit:start": true, "exit:connected": true, "exit:first-batch": true, "hang:connected": true,
		"garbage:connected": true, "truncated:connected": true, "exit:load": true, "exit:state": true,
		"hang:conns": true, "reject-state": true, "panic:load": true, "panic:migrate": true}
	faults := []struct{ fault, why, reason string }{
		{"exit:start", "exited before connecting", "exit status 7"},
		{"exit:connected", "exited before HELLO", "exit status 7"},
		{"exit:first-batch", "exited during fd transfer", "exit status 7"},
		{"exit:load", "exited during state transfer", "exit status 7"},
		{"exit:state", "exited before READY", "exit status 7"},
		{"hang:connected", "hung before HELLO", "upgrade timed out"},
		{"hang:conns", "hung with the connections paused", "pause timeout"},
		{"reject-state", "rejected the state", "state rejected on purpose"},
		{"panic:load", "panicked loading the state", "load state panicked"},
		{"panic:migrate", "panicked migrating the state", "migration panics on purpose"},
		{"proto-version", "speaks a newer protocol version",
			fmt.Sprintf("new process speaks protocol version %d, this one %d", ProtocolVersion+1, ProtocolVersion)},
		// What a process of the previous version says to this one.
		{"proto-older", "speaks an older protocol version",
			fmt.Sprintf("new process speaks protocol version %d, this one %d", ProtocolVersion-1, ProtocolVersion)},
		{"fdlimit", "cannot hold that many fds", "new process can hold"},
		{"fdlimit:first-batch", "ran out of fds mid-transfer", "MSG_CTRUNC"},
		{"garbage:connected", "sent garbage", "protocol error"},
		{"truncated:connected", "sent a truncated frame", "protocol error"},
	}
	for _, f := range faults {
		t.Run(strings.ReplaceAll(f.fault, ":", "-"), func(t *testing.T) {
			t.Parallel()
			// The timeouts are safety nets (startServer's) but for the two
			// faults that hang until one fires: the upgrade timeout, set
			// for that upgrade alone, and the pause timeout, which the good
			// upgrade after it must also fit in.
			var env []string
			if f.fault == "hang:conns" {
				env = append(env, envPauseTimeout+"=5s")
			}
			start := startServer
			if inProcess[f.fault] {
				start = startInProcess
			}
			h := start(t, env...)
			l := startLoad(t, h.addr, 260)
			l.waitRounds(300)
			old := h.pid
			// Every connection is the old process's before the upgrade: on
			// a loaded machine some of the 260 were not accepted yet when
			// the rounds were made, and fdlimit:first-batch needs more
			// than one early CONNS frame (253 fds each) to reach its step.
			l.waitServedBy(old)
			h.setFault(f.fault)
			if f.fault == "hang:connected" {
				h.setUpgradeTimeout("2s")
			}
			p, fail := h.upgrade()
			h.setUpgradeTimeout("")
			if p != 0 {
				t.Fatalf("new process %d took over although it %s", p, f.why)
			}
			if !strings.Contains(fail, f.reason) {
				t.Fatalf("rolled back for %q, want a reason with %q", fail, f.reason)
			}
			if got := h.pidFile(); got != old {
				t.Fatalf("PID file names %d after the rollback, want the old process %d", got, old)
			}
			l.waitRounds(300)
			h.setFault("")
			p, fail = h.upgrade()
			if p == 0 {
				t.Fatalf("upgrade after the rollback failed: %s", fail)
			}
			if got := h.pidFile(); got != p {
				t.Fatalf("PID file names %d after the upgrade, want the new process %d", got, p)
			}
			l.waitServedBy(p)
			l.stop()
			l.requireAllOn(old, p)
		})
	}
}

// TestBadBinaries: a missing binary and one that exits at once fail the
// upgrade; the old process carries on, and switching the symlink back to a
// good binary upgrades.
func TestBadBinaries(t *testing.T) {
	h := startServer(t)
	l := startLoad(t, h.addr, 20)
	good, _ := filepath.EvalSymlinks(h.dir + "/current")
	quitter := filepath.Join(h.dir, "quitter")
	if err := os.WriteFile(quitter, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{filepath.Join(h.dir, "missing"), quitter} {
		h.deploy(bad)
		l.waitRounds(50)
		if p, _ := h.upgrade(); p != 0 {
			t.Fatalf("upgrade to %s succeeded", bad)
		}
	}
	h.deploy(good)
	if p, fail := h.upgrade(); p == 0 {
		t.Fatalf("upgrade back to a good binary failed: %s", fail)
	}
	l.waitRounds(50)
	l.stop()
}

// TestSecondTriggerRefused: a trigger while an upgrade runs is refused at
// once, with a log line; the running upgrade goes on to its own end.
func TestSecondTriggerRefused(t *testing.T) {
	h := startInProcess(t, envPause+"=conns")
	l := startLoad(t, h.addr, 10)
	if err := h.kill(h.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.awaitPaused("conns") // the new process holds the first upgrade here
	if err := h.kill(h.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if f := h.next(); f[0] != "failed" || !strings.Contains(strings.Join(f, " "), "already in progress") {
		t.Fatalf("second trigger: event %v, want it refused", f)
	}
	h.release("conns")
	if p, fail := h.awaitUpgrade(); p == 0 {
		t.Fatalf("the first upgrade failed: %s", fail)
	}
	if !h.logs.waitFor("upgrade refused", time.Minute) {
		t.Fatal("no log line for the refused trigger")
	}
	l.waitRounds(50)
	l.stop()
}

// TestListenersOnly: in ListenersOnly mode the new process inherits
// the listener and nothing else. The old process's connection stays with it
// and keeps its request count, no state travels, new connections reach
// the new process only, and the old one serves its connection until the
// client goes.
func TestListenersOnly(t *testing.T) {
	h := startInProcess(t, envListenersOnly+"=1")
	old := h.pid
	nc, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	kept := &conn{c: nc, r: bufio.NewReader(nc), pids: map[string]bool{}}
	if err := kept.round(3, true); err != nil {
		t.Fatal(err)
	}

	if err := h.kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var ready, exit []string
	for ready == nil || exit == nil {
		switch f := h.next(); f[0] {
		case "ready":
			ready = f
		case "exit":
			exit = f
		default:
			t.Fatalf("event %v during the upgrade", f)
		}
	}
	newPid, _ := strconv.Atoi(ready[1])
	if exit[1] != strconv.Itoa(old) || newPid == old {
		t.Fatalf("ready %v, exit %v; want a new process ready and pid %d told to exit", ready, exit, old)
	}
	if exit[2] != "1" {
		t.Fatalf("old process kept %s connections after Exit, want 1", exit[2])
	}
	if ready[3] != "0" {
		t.Fatalf("new process started with total %s, want 0: no state travels", ready[3])
	}

	// The old connection is still the old process's, its count going on.
	if err := kept.round(3, true); err != nil {
		t.Fatalf("old connection after the upgrade: %v", err)
	}
	if len(kept.pids) != 1 || !kept.pids[strconv.Itoa(old)] {
		t.Fatalf("old connection served by %v, want only pid %d", kept.pids, old)
	}
	// Every new connection reaches the new process: the old one stopped accepting.
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		fresh := &conn{c: c, r: bufio.NewReader(c), pids: map[string]bool{}}
		err = fresh.round(1, false)
		c.Close()
		if err != nil {
			t.Fatalf("new connection %d: %v", i, err)
		}
		if len(fresh.pids) != 1 || !fresh.pids[ready[1]] {
			t.Fatalf("new connection %d served by %v, want pid %d", i, fresh.pids, newPid)
		}
	}

	nc.Close()
	if f := h.expect("drained"); f[1] != strconv.Itoa(old) {
		t.Fatalf("drained %v, want pid %d", f, old)
	}
}

// TestChangesAfterEarlyFds changes the connections between the early fds
// and the park: one closes (its early copy in the new process must go, so
// that its client sees the close), one arrives (it travels late, with its
// fd). Every connection ends up served exactly once, by the right process.
func TestChangesAfterEarlyFds(t *testing.T) {
	h := startInProcess(t, envPause+"=early")
	old := h.pid
	kept, quitting := dialConn(t, h.addr), dialConn(t, h.addr)
	for _, c := range []*conn{kept, quitting} {
		if err := c.round(2, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	h.awaitPaused("early")
	// Between the early fds and the park: the old process still serves.
	if _, err := quitting.c.Write([]byte("quit\n")); err != nil {
		t.Fatal(err)
	}
	late := dialConn(t, h.addr)
	if err := late.round(2, false); err != nil {
		t.Fatalf("connection made after the early fds: %v", err)
	}
	// The quitting connection's handler closes it right after its "bye":
	// parked or not by then, it is closed and must not travel.
	quitting.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if bye, err := quitting.r.ReadString('\n'); bye != "bye\n" {
		t.Fatalf("quitting connection: read %q, %v", bye, err)
	}
	h.release("early")
	newPid, fail := h.awaitUpgrade()
	if newPid == 0 {
		t.Fatalf("upgrade failed: %s", fail)
	}

	// The quitting connection is closed for its client, though the new
	// process had a copy of it.
	quitting.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(quitting.r)
	if err != nil || len(rest) != 0 {
		t.Fatalf("quitting connection: read %q, %v; want the close after bye", rest, err)
	}
	for name, c := range map[string]*conn{"kept": kept, "late": late} {
		if err := c.round(2, true); err != nil {
			t.Fatalf("%s connection after the upgrade: %v", name, err)
		}
		if want := map[string]bool{strconv.Itoa(old): true, strconv.Itoa(newPid): true}; !maps.Equal(c.pids, want) {
			t.Fatalf("%s connection served by %v, want %v", name, c.pids, want)
		}
	}
	// Two went early (one closed since), one late; two handed over.
	if h.exit[3] != "2" || h.exit[5] != "2" {
		t.Fatalf("old process's exit %v: want 2 handed over, 2 sent early", h.exit)
	}
}

func dialConn(t *testing.T, addr string) *conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &conn{c: nc, r: bufio.NewReader(nc), pids: map[string]bool{}}
}

// keptConn dials a connection that an upgrade is to keep, and makes n
// requests on it (round's check says whether each reply must be in order).
func keptConn(t *testing.T, addr string, n int, check bool) *conn {
	t.Helper()
	c := dialConn(t, addr)
	if err := c.round(n, check); err != nil {
		t.Fatal(err)
	}
	return c
}

// requireServedBy makes 2 more requests on c and fails unless they went
// well and pid has served c; when says after what.
func (c *conn) requireServedBy(t *testing.T, pid int, when string) {
	t.Helper()
	if err := c.round(2, true); err != nil || !c.pids[strconv.Itoa(pid)] {
		t.Fatalf("kept connection %s: served by %v, %v", when, c.pids, err)
	}
}
