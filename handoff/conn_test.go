//go:build linux

package handoff

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"
)

// In-process tests of Conn and the registry, with loopback TCP peers.

// peer is the client end of a connection under test.
type peer struct {
	net.Conn
	r *bufio.Reader
}

// tcpPair returns a loopback TCP connection: the server end, for a Conn,
// and its peer.
func tcpPair(t *testing.T) (net.Conn, *peer) {
	t.Helper()
	server, client := loopbackPair(t)
	// A hang fails the test, as in await.
	if err := client.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return server, &peer{Conn: client, r: bufio.NewReader(client)}
}

// loopbackPair returns both ends of a loopback TCP connection, closed
// when the test ends.
func loopbackPair(t testing.TB) (server *net.TCPConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*net.TCPConn), client
}

func (p *peer) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(p, s); err != nil {
		t.Fatal(err)
	}
}

// finish half-closes the peer: the Conn reads io.EOF after what was sent.
func (p *peer) finish(t *testing.T) {
	t.Helper()
	if err := p.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// line reads the next line the Conn wrote.
func (p *peer) line(t *testing.T) string {
	t.Helper()
	s, err := p.r.ReadString('\n')
	if err != nil {
		t.Fatalf("peer read %q: %v", s, err)
	}
	return s[:len(s)-1]
}

// expectEOF checks that the Conn's side closed the connection.
func (p *peer) expectEOF(t *testing.T) {
	t.Helper()
	if s, err := p.r.ReadString('\n'); err != io.EOF || s != "" {
		t.Fatalf("peer read %q, %v; want EOF", s, err)
	}
}

// echo is a connection handler for the tests: it answers each line with
// itself and parks when asked, with state as its handler state. With hold
// set it says so on asked when Next returns ErrPark, and waits for hold to
// close before it calls Park: the test acts while the Conn is asked but not
// parked.
type echo struct {
	c     *Conn
	state []byte
	asked chan struct{}
	hold  chan struct{}
	parks chan error // each Park's result
	done  chan error // the error the handler returned on
}

func serveEcho(c *Conn, state string, hold bool) *echo {
	e := &echo{c: c, state: []byte(state), parks: make(chan error, 16), done: make(chan error, 1)}
	if hold {
		e.asked, e.hold = make(chan struct{}), make(chan struct{})
	}
	go e.serve()
	return e
}

func (e *echo) serve() {
	for {
		line, err := e.c.Next(bufio.ScanLines)
		if errors.Is(err, ErrPark) {
			if e.hold != nil {
				e.asked <- struct{}{}
				<-e.hold
			}
			err = e.c.Park(e.state)
			e.parks <- err
			if err != nil {
				e.done <- err
				return
			}
			continue
		}
		if err == nil {
			_, err = e.c.Write(append(line, '\n'))
		}
		if err != nil {
			e.c.Close()
			e.done <- err
			return
		}
	}
}

// await returns what ch delivers. A hang fails the test instead of
// hanging the test run; the bound is no timing assertion.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing after 10s", what)
	}
	panic("unreachable")
}

// awaitState polls until c is in state st, to know that a goroutine has
// got as far as it can.
func awaitState(t *testing.T, c *Conn, st parkState) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); runtime.Gosched() {
		c.mu.Lock()
		got := c.state
		c.mu.Unlock()
		if got == st {
			return
		}
	}
	t.Fatalf("connection never reached state %d", st)
}

// tokens calls Next until it fails, checking that every message is real.
func tokens(t *testing.T, c *Conn, split bufio.SplitFunc) ([]string, error) {
	t.Helper()
	var got []string
	for range 100 {
		tok, err := c.Next(split)
		if err != nil {
			return got, err
		}
		if tok == nil {
			t.Fatalf("Next returned no message and no error, after %q", got)
		}
		got = append(got, string(tok))
	}
	t.Fatalf("Next never failed: %q", got)
	return nil, nil
}

// skipAtEOF splits on ';' and, once the peer has finished, drops leading
// spaces one call at a time before the last message.
func skipAtEOF(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, ';'); i >= 0 {
		return i + 1, data[:i], nil
	}
	switch {
	case !atEOF:
		return 0, nil, nil
	case data[0] == ' ':
		return 1, nil, nil
	}
	return len(data), data, nil
}

func TestConnNext(t *testing.T) {
	for _, tc := range []struct {
		name     string
		split    bufio.SplitFunc
		buffered string // given to track, as a resumed connection's unread bytes
		sent     string // then the peer finishes
		want     []string
	}{
		{"words after spaces", bufio.ScanWords, "", "   hello  world  ", []string{"hello", "world"}},
		{"words after buffered spaces", bufio.ScanWords, "    ", "hi there", []string{"hi", "there"}},
		{"spaces only", bufio.ScanWords, "", "  \t \n ", nil},
		{"final line", bufio.ScanLines, "", "one\nlast", []string{"one", "last"}},
		{"empty lines", bufio.ScanLines, "", "\n\nx\n", []string{"", "", "x"}},
		{"final word after spaces", bufio.ScanWords, "", "  \t z", []string{"z"}},
		{"skipped at EOF", skipAtEOF, "", "a; z", []string{"a", "z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, p := tcpPair(t)
			c := newRegistry(DefaultMaxBuffered).track(nc, "test", []byte(tc.buffered))
			p.send(t, tc.sent)
			p.finish(t)
			got, err := tokens(t, c, tc.split)
			if !errors.Is(err, io.EOF) || !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, %v; want %q, EOF", got, err, tc.want)
			}
			if _, err := c.Next(tc.split); !errors.Is(err, io.EOF) {
				t.Fatalf("Next after EOF: %v, want EOF again", err)
			}
		})
	}
}

// A deadline is no end of the stream: the partial message stays buffered.
func TestConnNextDeadlineKeepsPartial(t *testing.T) {
	nc, p := tcpPair(t)
	c := newRegistry(DefaultMaxBuffered).track(nc, "test", []byte("par"))
	if err := c.SetReadDeadline(aLongTimeAgo); err != nil {
		t.Fatal(err)
	}
	if tok, err := c.Next(bufio.ScanLines); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Next past the deadline: %q, %v; want a timeout", tok, err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	p.send(t, "tial\n")
	if tok, err := c.Next(bufio.ScanLines); string(tok) != "partial" || err != nil {
		t.Fatalf("Next: %q, %v; want \"partial\"", tok, err)
	}
}

// While the handler is parked, other goroutines neither take the bytes
// that travel with the connection nor write past the park: they wait for
// the outcome. After a handover nothing of the Conn works here any more,
// and the new process's copy carries on with the peer.
func TestConnParked(t *testing.T) {
	for _, outcome := range outcomes {
		t.Run(outcome, func(t *testing.T) {
			r := newRegistry(DefaultMaxBuffered)
			nc, p := tcpPair(t)
			c := r.track(nc, "test", []byte("pre"))
			e := serveEcho(c, "s", false)
			parked := parkAll(t, r)
			var buf [8]byte
			if n, err := c.Read(buf[:]); !errors.Is(err, ErrPark) {
				t.Fatalf("Read while parked: %q, %v; want ErrPark", buf[:n], err)
			}
			if tok, err := c.Next(bufio.ScanLines); !errors.Is(err, ErrPark) {
				t.Fatalf("Next while parked: %q, %v; want ErrPark", tok, err)
			}
			wrote, again := make(chan error, 1), make(chan error, 1)
			go func() {
				_, err := io.WriteString(c, "w\n")
				wrote <- err
			}()
			go func() { again <- c.Park(nil) }()
			awaitBlocked(t, "(*Conn).Write", 1)
			awaitBlocked(t, "(*Conn).Park", 2) // and the handler's
			var want error
			var np net.Conn
			if outcome == "handover" {
				np, want = adopt(t, c), ErrHandedOver
			}
			endUpgrade(r, outcome, parked)
			for _, ch := range []chan error{e.parks, wrote, again} {
				if err := await(t, ch, "Park or Write"); !errors.Is(err, want) {
					t.Fatalf("after %s: %v, want %v", outcome, err, want)
				}
			}
			if outcome == "rollback" {
				p.send(t, "fix\n")
				got := []string{p.line(t), p.line(t)}
				slices.Sort(got)
				if !slices.Equal(got, []string{"prefix", "w"}) {
					t.Fatalf("peer got %q, want the parked Write and the echo", got)
				}
				return
			}
			await(t, e.done, "handler")
			expectHandedOver(t, c)
			if _, err := io.WriteString(np, "new\n"); err != nil {
				t.Fatal(err)
			}
			if got := p.line(t); got != "new" {
				t.Fatalf("peer got %q from the new process", got)
			}
		})
	}
}

// expectHandedOver checks that c does nothing once handed over, buffered
// bytes or not.
func expectHandedOver(t *testing.T, c *Conn) {
	t.Helper()
	var buf [8]byte
	if n, err := c.Read(buf[:]); !errors.Is(err, ErrHandedOver) {
		t.Errorf("Read: %q, %v", buf[:n], err)
	}
	if tok, err := c.Next(bufio.ScanLines); !errors.Is(err, ErrHandedOver) {
		t.Errorf("Next: %q, %v", tok, err)
	}
	if _, err := c.Write([]byte("x\n")); !errors.Is(err, ErrHandedOver) {
		t.Errorf("Write: %v", err)
	}
	if err := c.Park(nil); !errors.Is(err, ErrHandedOver) {
		t.Errorf("Park: %v", err)
	}
	if err := c.SetReadDeadline(time.Now()); err != nil {
		t.Errorf("SetReadDeadline: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// Close of a parked connection from another goroutine (an idle reaper)
// waits for the outcome: the fd stays this connection's while it may be
// sent, and the handler is woken.
func TestConnCloseWhileParked(t *testing.T) {
	for _, outcome := range outcomes {
		t.Run(outcome, func(t *testing.T) {
			r := newRegistry(DefaultMaxBuffered)
			nc, p := tcpPair(t)
			c := r.track(nc, "test", nil)
			e := serveEcho(c, "s", false)
			parked := parkAll(t, r)
			closed := make(chan error, 1)
			go func() { closed <- c.Close() }()
			awaitBlocked(t, "(*Conn).Close", 1)
			if _, err := connFd(c.Conn); err != nil {
				t.Fatalf("the parked connection's fd, as the upgrade sends it: %v", err)
			}
			var np net.Conn
			if outcome == "handover" {
				np = adopt(t, c)
			}
			endUpgrade(r, outcome, parked)
			park := await(t, e.parks, "Park")
			if err := await(t, closed, "Close"); err != nil {
				t.Fatalf("Close: %v", err)
			}
			await(t, e.done, "handler")
			if outcome == "rollback" {
				if park != nil {
					t.Fatalf("Park after rollback: %v", park)
				}
				p.expectEOF(t)
				return
			}
			if !errors.Is(park, ErrHandedOver) {
				t.Fatalf("Park after handover: %v", park)
			}
			if _, err := io.WriteString(np, "new\n"); err != nil {
				t.Fatal(err)
			}
			if got := p.line(t); got != "new" {
				t.Fatalf("peer got %q from the new process", got)
			}
		})
	}
}

// Close of a connection asked to park but not parked yet closes it, and
// neither parkAll nor the handler's Park waits for it any more.
func TestConnCloseWhileAsked(t *testing.T) {
	r := newRegistry(DefaultMaxBuffered)
	nc, p := tcpPair(t)
	c := r.track(nc, "test", nil)
	e := serveEcho(c, "s", true)
	res := goParkAll(r)
	await(t, e.asked, "ErrPark")
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	p.expectEOF(t)
	if pr := await(t, res, "parkAll"); pr.err != nil || len(pr.parked) != 0 {
		t.Fatalf("parkAll: %d parked, %v; want none", len(pr.parked), pr.err)
	}
	close(e.hold)
	if err := await(t, e.parks, "Park"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Park of a closed connection: %v, want net.ErrClosed", err)
	}
	await(t, e.done, "handler")
	r.resumeAll()
}

// Close races Park, and the upgrade ends either way: no handler and no
// Close may hang.
func TestConnCloseParkRace(t *testing.T) {
	for i := range 200 {
		r := newRegistry(DefaultMaxBuffered)
		nc, _ := tcpPair(t)
		c := r.track(nc, "test", nil)
		e := serveEcho(c, "s", false)
		res := goParkAll(r)
		closed := make(chan error, 1)
		go func() { closed <- c.Close() }()
		pr := await(t, res, "parkAll")
		if pr.err != nil {
			t.Fatal(pr.err)
		}
		endUpgrade(r, outcomes[i%2], pr.parked)
		if err := await(t, closed, "Close"); err != nil {
			t.Fatalf("Close: %v", err)
		}
		await(t, e.done, "handler")
	}
}
