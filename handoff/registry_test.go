//go:build linux

package handoff

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

type parkResult struct {
	parked []parkedConn
	err    error
}

// goParkAll runs r.parkAll on a goroutine of its own.
func goParkAll(r *registry) <-chan parkResult {
	res := make(chan parkResult, 1)
	go func() {
		parked, err := r.parkAll(context.Background())
		res <- parkResult{parked, err}
	}()
	return res
}

// parkAll parks every connection of r.
func parkAll(t *testing.T, r *registry) []parkedConn {
	t.Helper()
	res := await(t, goParkAll(r), "parkAll")
	if res.err != nil {
		t.Fatal(res.err)
	}
	return res.parked
}

// outcomes name the two ends of an upgrade, for subtests.
var outcomes = []string{"rollback", "handover"}

// endUpgrade ends the upgrade as outcome says, handing over parked.
func endUpgrade(r *registry, outcome string, parked []parkedConn) (kept int) {
	if outcome == "handover" {
		kept, closed := r.handover(parked)
		<-closed
		return kept
	}
	r.resumeAll()
	return 0
}

// adopt takes a copy of c's socket, as the new process does before the old
// one lets go of its own.
func adopt(t *testing.T, c *Conn) net.Conn {
	t.Helper()
	fd, err := dupConnFd(c.Conn)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "adopted")
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// awaitBlocked polls until n goroutines wait on a channel in fn, such as
// "(*Conn).Close": the test must not go on before they wait.
func awaitBlocked(t *testing.T, fn string, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		found := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "[chan receive") && strings.Contains(g, fn+"(") {
				found++
			}
		}
		if found >= n {
			return
		}
	}
	t.Fatalf("%d goroutines never waited in %s", n, fn)
}

// expectLine sends a line to p's Conn and expects it back.
func expectEcho(t *testing.T, p *peer, line string) {
	t.Helper()
	p.send(t, line+"\n")
	if got := p.line(t); got != line {
		t.Fatalf("peer got %q, want %q", got, line)
	}
}

// A parked connection travels with its buffered bytes and its handler's
// state; after a rollback its handler carries on with them.
func TestRegistryParkResume(t *testing.T) {
	r := newRegistry(DefaultMaxBuffered)
	nc, p := tcpPair(t)
	e := serveEcho(r.track(nc, "test", []byte("pre")), "st", false)
	parked := parkAll(t, r)
	if len(parked) != 1 || parked[0].c != e.c || string(parked[0].unread) != "pre" || string(parked[0].state) != "st" {
		t.Fatalf("parked %+v, want the connection with unread \"pre\" and state \"st\"", parked)
	}
	p.send(t, "fix\n") // waits in the kernel meanwhile
	r.resumeAll()
	if err := await(t, e.parks, "Park"); err != nil {
		t.Fatalf("Park after rollback: %v", err)
	}
	if got := p.line(t); got != "prefix" {
		t.Fatalf("peer got %q, want \"prefix\"", got)
	}
}

// Connections that arrive together (a takeover's) are registered together,
// each as track would: with distinct ids, listed, parked by the next
// upgrade with what they had buffered, in the buffer given by useBuffer.
func TestRegistryAddTogether(t *testing.T) {
	r := newRegistry(DefaultMaxBuffered)
	nca, pa := tcpPair(t)
	ncb, pb := tcpPair(t)
	ca, cb := r.newConn(nca, "a", []byte("pre")), r.newConn(ncb, "b", nil)
	r.add(ca, cb)
	if ca.id == 0 || cb.id == 0 || ca.id == cb.id {
		t.Fatalf("ids %d and %d, want two distinct", ca.id, cb.id)
	}
	if live := r.live(); len(live) != 2 || !slices.Contains(live, ca) || !slices.Contains(live, cb) {
		t.Fatalf("live %v, want both", live)
	}
	ca.useBuffer(make([]byte, 0, readBufSize))
	if cap(ca.buf) != readBufSize || string(ca.buf[ca.off:]) != "pre" {
		t.Fatalf("buffer %q of capacity %d, want \"pre\" in the given one", ca.buf[ca.off:], cap(ca.buf))
	}
	a, b := serveEcho(ca, "a", false), serveEcho(cb, "b", false)
	parked := parkAll(t, r)
	if len(parked) != 2 {
		t.Fatalf("parked %d, want 2", len(parked))
	}
	for _, p := range parked {
		if want := map[*Conn]string{ca: "pre", cb: ""}[p.c]; string(p.unread) != want {
			t.Fatalf("%s parked with unread %q, want %q", p.c.kind, p.unread, want)
		}
	}
	r.resumeAll()
	for _, e := range []*echo{a, b} {
		if err := await(t, e.parks, "Park"); err != nil {
			t.Fatalf("Park after rollback: %v", err)
		}
	}
	pa.send(t, "fix\n")
	if got := pa.line(t); got != "prefix" {
		t.Fatalf("peer got %q, want \"prefix\"", got)
	}
	expectEcho(t, pb, "b")
}

// handover gives away exactly the connections sent: the others carry on
// here, still tracked. The listeners are closed, and then this process's
// copies of the connections sent.
func TestRegistryHandover(t *testing.T) {
	r := newRegistry(DefaultMaxBuffered)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &Listener{Listener: ln, reg: r, kind: "tcp:test"}
	r.listeners = append(r.listeners, l)
	nca, pa := tcpPair(t)
	a := serveEcho(r.track(nca, "a", nil), "a", false)
	ncb, pb := tcpPair(t)
	b := serveEcho(r.track(ncb, "b", nil), "b", false)
	sent := slices.DeleteFunc(parkAll(t, r), func(p parkedConn) bool { return p.c != a.c })
	if len(sent) != 1 {
		t.Fatalf("a parked %d times", len(sent))
	}
	np := adopt(t, a.c)
	kept, closed := r.handover(sent)
	if kept != 1 {
		t.Fatalf("handover kept %d connections, want 1", kept)
	}
	<-closed // this process's copy of a, closed after the handlers were told
	if _, err := a.c.Conn.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("old copy of a after handover: write gave %v, want net.ErrClosed", err)
	}
	if err := await(t, a.parks, "Park of a"); !errors.Is(err, ErrHandedOver) {
		t.Fatalf("Park of the connection sent: %v", err)
	}
	if err := await(t, b.parks, "Park of b"); err != nil {
		t.Fatalf("Park of the connection kept: %v", err)
	}
	await(t, a.done, "handler of a")
	if _, err := io.WriteString(np, "new\n"); err != nil {
		t.Fatal(err)
	}
	if got := pa.line(t); got != "new" {
		t.Fatalf("peer of a got %q from the new process", got)
	}
	expectEcho(t, pb, "b")
	if live := r.live(); len(live) != 1 || live[0] != b.c {
		t.Fatalf("tracked after handover: %v, want b", live)
	}
	if _, err := l.Accept(); !errors.Is(err, ErrHandedOver) {
		t.Fatalf("Accept after handover: %v", err)
	}
}

// A connection tracked while parkAll waits is asked to park at once, and
// parkAll waits for it too.
func TestRegistryWrapWhileParking(t *testing.T) {
	for _, outcome := range outcomes {
		t.Run(outcome, func(t *testing.T) {
			r := newRegistry(DefaultMaxBuffered)
			nca, pa := tcpPair(t)
			a := serveEcho(r.track(nca, "a", nil), "a", true)
			res := goParkAll(r)
			await(t, a.asked, "ErrPark")
			ncb, pb := tcpPair(t)
			b := serveEcho(r.track(ncb, "b", nil), "b", false)
			awaitState(t, b.c, parked)
			close(a.hold)
			pr := await(t, res, "parkAll")
			if pr.err != nil || len(pr.parked) != 2 {
				t.Fatalf("parkAll: %d parked, %v; want both", len(pr.parked), pr.err)
			}
			endUpgrade(r, outcome, pr.parked)
			var want error
			if outcome == "handover" {
				want = ErrHandedOver
			}
			for _, e := range []*echo{a, b} {
				if err := await(t, e.parks, "Park"); !errors.Is(err, want) {
					t.Fatalf("Park after %s: %v", outcome, err)
				}
			}
			if outcome == "rollback" {
				expectEcho(t, pa, "a")
				expectEcho(t, pb, "b")
			}
		})
	}
}

// A connection tracked after parkAll has listed the parked ones waits for
// the outcome: it is tracked as usual after a rollback, and after a
// handover, which did not send it, it keeps working here, untracked.
func TestRegistryWrapWhileFrozen(t *testing.T) {
	for _, outcome := range outcomes {
		t.Run(outcome, func(t *testing.T) {
			r := newRegistry(DefaultMaxBuffered)
			nca, _ := tcpPair(t)
			serveEcho(r.track(nca, "a", nil), "a", false)
			parked := parkAll(t, r)
			ncb, pb := tcpPair(t)
			got := make(chan *Conn, 1)
			go func() { got <- r.track(ncb, "b", nil) }()
			awaitBlocked(t, "(*registry).track", 1)
			kept := endUpgrade(r, outcome, parked)
			b := serveEcho(await(t, got, "track"), "b", false)
			expectEcho(t, pb, "b")
			tracked := slices.Contains(r.live(), b.c)
			if outcome == "rollback" {
				if !tracked {
					t.Fatal("connection tracked during the rollback's wait is not tracked")
				}
				if n := len(parkAll(t, r)); n != 2 {
					t.Fatalf("next upgrade parked %d connections, want both", n)
				}
				r.resumeAll()
				expectEcho(t, pb, "b2")
				return
			}
			if tracked || kept != 0 {
				t.Fatalf("after handover: tracked %t, kept %d; want an untracked connection", tracked, kept)
			}
			if err := b.c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			pb.expectEOF(t)
		})
	}
}
