//go:build linux

package handoff

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sockets counts the socket fds of a process and lists its other fds.
func sockets(t *testing.T, pid int) (int, []string) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var other []string
	for _, e := range ents {
		target, _ := os.Readlink(dir + "/" + e.Name())
		if strings.HasPrefix(target, "socket:") {
			n++
		} else {
			other = append(other, target)
		}
	}
	return n, other
}

// TestNoFdLeaks: a failed upgrade leaves the old process with exactly the
// fds it had (sockets, pipes, anything), whatever failed: the new process
// or its binary; and a successful one gives the new process exactly as
// many sockets: the handoff channel and every spare copy are closed, in
// both. 600 connections take three early CONNS frames and more than one
// frame's worth of PARKED records at 253.
func TestNoFdLeaks(t *testing.T) {
	// hang:state waits the pause timeout out; the good upgrade of 600
	// connections must fit in it on a loaded machine.
	h := startServer(t, envPauseTimeout+"=5s")
	conns := dialServed(t, h.addr, 600)
	before, beforeOther := sockets(t, h.pid)
	check := func(what string) {
		t.Helper()
		if after, other := sockets(t, h.pid); after != before || len(other) != len(beforeOther) {
			t.Fatalf("after a failed upgrade (%s): %d sockets and %v, before %d and %v", what, after, other, before, beforeOther)
		}
	}
	for _, f := range []string{"exit:first-batch", "reject-state", "hang:state"} {
		h.setFault(f)
		if p, _ := h.upgrade(); p != 0 {
			t.Fatalf("upgrade with fault %s succeeded", f)
		}
		check(f)
	}
	h.setFault("")
	good, _ := filepath.EvalSymlinks(h.dir + "/current")
	quitter := filepath.Join(h.dir, "quitter")
	if err := os.WriteFile(quitter, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{filepath.Join(h.dir, "missing"), quitter, quitter, quitter} {
		h.deploy(bad)
		if p, _ := h.upgrade(); p != 0 {
			t.Fatalf("upgrade to %s succeeded", bad)
		}
		check(bad)
	}
	h.deploy(good)
	p, fail := h.upgrade()
	if p == 0 {
		t.Fatal(fail)
	}
	for _, cl := range conns {
		if err := cl.round(1, false); err != nil {
			t.Fatal(err)
		}
	}
	if got, other := sockets(t, p); got != before {
		t.Fatalf("new process has %d sockets, the old one had %d (other fds: %v)", got, before, other)
	}
}

// TestGrowFdTableClosesNothing: growing the fd table before a handoff
// never closes an fd. The count of open fds is taken first; another
// goroutine may open one at the number the growth aims for before it
// happens (in the in-process tests, the old process's duplicates and the
// new one's received fds share one table: CI lost connection 125 so, as
// "fcntl: bad file descriptor").
func TestGrowFdTableClosesNothing(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A free number well above the highest open fd, opened as the
	// other goroutine would have.
	_, highest, _, err := fdUsage()
	if err != nil {
		t.Fatal(err)
	}
	at, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, highest+100)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(at)
	if err := growFdTableTo(at); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(at), unix.F_GETFD, 0); err != nil {
		t.Fatalf("fd %d, open before the table grew to it, is gone after: %v", at, err)
	}
}

// TestNoFdLeaksPeer: TestNoFdLeaks for takeovers by peers. A peer that
// refuses the state, exits while it takes over, or hangs until the pause
// timeout leaves the serving process with exactly the fds it had; one
// that takes over holds as many sockets and other fds as the process it
// replaced (listener, takeover socket, connections, no channel, no spare
// copy, no lock file), and serves every connection.
func TestNoFdLeaksPeer(t *testing.T) {
	h := startServer(t, append(takeoverEnv(t.TempDir()), envPauseTimeout+"=5s")...)
	conns := dialServed(t, h.addr, 600)
	old := h.pid
	before, beforeOther := sockets(t, old)
	for _, f := range []string{"reject-state", "exit:load", "hang:state"} {
		h.setFault(f)
		// A peer that fails says so only in the old process's log: one
		// that exits reports nothing.
		failed := strings.Count(h.logs.String(), lineRolledBack)
		h.startPeer()
		h.awaitLogged(lineRolledBack, failed+1)
		if f == "reject-state" {
			h.expect("error") // the peer's, before it exits
		}
		if after, other := sockets(t, old); after != before || len(other) != len(beforeOther) {
			t.Fatalf("after a failed takeover (%s): %d sockets and %v, before %d and %v", f, after, other, before, beforeOther)
		}
	}
	h.setFault("")
	p, fail := h.peer()
	if p == 0 {
		t.Fatal(fail)
	}
	for _, cl := range conns {
		if err := cl.round(1, false); err != nil {
			t.Fatal(err)
		}
		if !cl.pids[strconv.Itoa(p)] {
			t.Fatalf("a connection was not served by the peer %d: %v", p, cl.pids)
		}
	}
	if got, other := sockets(t, p); got != before || len(other) != len(beforeOther) {
		t.Fatalf("the peer holds %d sockets and %v, the process it replaced %d and %v", got, other, before, beforeOther)
	}
}

const lineRolledBack = "upgrade failed; this process carries on"

// awaitLogged waits until the chain's log holds what n times.
func (h *harness) awaitLogged(what string, n int) {
	h.t.Helper()
	for end := time.Now().Add(60 * time.Second); strings.Count(h.logs.String(), what) < n; {
		if time.Now().After(end) {
			h.t.Fatalf("%q logged %d times, want %d", what, strings.Count(h.logs.String(), what), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// dialServed opens n connections, each served two requests, closed when
// the test ends.
func dialServed(t *testing.T, addr string, n int) []*conn {
	t.Helper()
	conns := make([]*conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cl := &conn{c: c, r: bufio.NewReader(c), pids: map[string]bool{}}
		if err := cl.round(2, true); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cl)
	}
	return conns
}

// The fds sent early are the connections' own, held open while they go:
// a connection closed before is left out, and one its handler closes
// while the frame is being sent keeps its fd until send returns.
func TestWithHeldFds(t *testing.T) {
	var conns []*Conn
	for i := range 3 {
		_, c := loopbackPair(t)
		conns = append(conns, &Conn{Conn: c, id: uint64(i)})
	}
	conns[1].Conn.Close()
	closed := make(chan error, 1)
	err := withHeldFds(conns, func(kept []*Conn, fds []int) error {
		if len(kept) != 2 || kept[0] != conns[0] || kept[1] != conns[2] || len(fds) != 2 {
			t.Fatalf("kept %v, fds %v: want connections 0 and 2", kept, fds)
		}
		for i, c := range kept {
			var st unix.Stat_t
			if err := unix.Fstat(fds[i], &st); err != nil {
				t.Fatalf("fd %d of connection %d: %v", fds[i], c.id, err)
			}
			want, _ := connFd(c.Conn)
			if want != fds[i] {
				t.Fatalf("connection %d: fd %d, its own is %d", c.id, fds[i], want)
			}
		}
		go func() { closed <- conns[0].Conn.Close() }()
		// The Close waits for this send to end: the fd stays open for it
		// however long the handler has been trying.
		for range 100 {
			runtime.Gosched()
			if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0); err != nil {
				t.Fatalf("fd %d closed under the send: %v", fds[0], err)
			}
		}
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while its fd was held", err)
		default:
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close after the send: %v", err)
	}
}
