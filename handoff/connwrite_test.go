//go:build linux

package handoff

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Writers on other goroutines race the handler's Park and a handover:
// once the connection is parked nothing of theirs reaches the peer, and
// no Write is split. The moment Park has parked the connection, a marker
// is written beneath the Conn (markParked); the peer must see no Write's
// bytes after it.
func TestConnWriteParkRace(t *testing.T) {
	const writers, rounds = 8, 20
	line := append(bytes.Repeat([]byte("w"), 3000), '\n') // several segments
	for range rounds {
		r := newRegistry(DefaultMaxBuffered)
		nc, p := tcpPair(t)
		c := r.track(nc, "test", nil)
		c.reg = markParked{r}
		e := serveEcho(c, "s", false)
		// The peer drains while the writers and the park race.
		lines := make(chan []string, 1)
		go func() {
			var got []string
			for {
				s, err := p.r.ReadString('\n')
				if err != nil {
					lines <- append(got, "read: "+err.Error())
					return
				}
				got = append(got, s)
				if s == "end\n" {
					lines <- got
					return
				}
			}
		}()
		var wg sync.WaitGroup
		started := make(chan struct{}, writers)
		errs := make(chan error, writers)
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					if i == 1 {
						started <- struct{}{}
					}
					if _, err := c.Write(line); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		for range writers {
			await(t, started, "a writer")
		}
		parked := parkAll(t, r)
		np := adopt(t, c)
		endUpgrade(r, "handover", parked)
		wg.Wait()
		close(errs)
		for err := range errs {
			if !errors.Is(err, ErrHandedOver) {
				t.Fatalf("Write after the handover: %v, want ErrHandedOver", err)
			}
		}
		if err := await(t, e.done, "handler"); !errors.Is(err, ErrHandedOver) {
			t.Fatalf("handler: %v", err)
		}
		if _, err := io.WriteString(np, "end\n"); err != nil {
			t.Fatal(err)
		}
		got := await(t, lines, "the peer")
		seen := false
		for i, s := range got {
			switch {
			case s == "parked\n":
				seen = true
			case s == "end\n" && seen:
			case seen:
				t.Fatalf("peer line %d of %d after the park: %.20q", i, len(got), s)
			case s != string(line):
				t.Fatalf("peer line %d: a torn Write: %d bytes %.20q", i, len(s), s)
			}
		}
		if !seen {
			t.Fatalf("peer never saw the marker: %d lines, last %.40q", len(got), got[len(got)-1])
		}
	}
}

// markParked is the registry to a Conn whose parking it marks: as the
// handler's Park reports it parked, "parked" goes to the peer beneath the
// Conn, before any Write that Park let pass could.
type markParked struct{ *registry }

func (m markParked) parkedOne(c *Conn) {
	_, _ = io.WriteString(c.Conn, "parked\n")
	m.registry.parkedOne(c)
}

// discardConn is a net.Conn whose writes and deadlines cost nothing, to
// measure what the Conn adds.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)     { return len(p), nil }
func (discardConn) SetReadDeadline(time.Time) error { return nil }

// BenchmarkConnWrite: a Write and a SetReadDeadline on a running Conn, as
// net/http makes them for each request (it sets the read deadline several
// times), over loopback TCP and over a net.Conn that does nothing.
func BenchmarkConnWrite(b *testing.B) {
	msg := make([]byte, 128)
	b.Run("loopback", func(b *testing.B) {
		s, client := loopbackPair(b)
		go io.Copy(io.Discard, bufio.NewReader(client))
		benchConnWrite(b, newRegistry(DefaultMaxBuffered).track(s, "bench", nil), msg)
	})
	b.Run("discard", func(b *testing.B) {
		benchConnWrite(b, newRegistry(DefaultMaxBuffered).track(discardConn{}, "bench", nil), msg)
	})
}

func benchConnWrite(b *testing.B, c *Conn, msg []byte) {
	dl := time.Now().Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.SetReadDeadline(dl); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
}
