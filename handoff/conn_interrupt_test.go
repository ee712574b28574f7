//go:build linux

package handoff

import (
	"bufio"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scriptedConn is a net.Conn whose reads return what the test says, when
// it says: each Read tells reading it has started, then returns the next
// result. Its read deadlines are only recorded.
type scriptedConn struct {
	net.Conn // nil: only Read and SetReadDeadline are used
	reading  chan struct{}
	results  chan readResult
}

type readResult struct {
	data string
	err  error
}

func newScriptedConn() *scriptedConn {
	return &scriptedConn{reading: make(chan struct{}, 1), results: make(chan readResult)}
}

func (s *scriptedConn) Read(p []byte) (int, error) {
	s.reading <- struct{}{}
	r := <-s.results
	return copy(p, r.data), r.err
}

func (s *scriptedConn) SetReadDeadline(time.Time) error { return nil }

// TestConnInterruptWithdrawn: an upgrade asks a connection to park, which
// interrupts its blocked read with a deadline, and then rolls back (the
// new process died) before the reader has seen why its read ended. The
// timeout was the library's, not the application's: the read goes on, and
// the handler never sees it. Before, Next returned os.ErrDeadlineExceeded,
// the test server closed the connection on it and its client was reset
// (TestPeerKilledDuringPark, once under make test's load).
func TestConnInterruptWithdrawn(t *testing.T) {
	for _, how := range []string{"Next", "Read"} {
		t.Run(how, func(t *testing.T) {
			sc := newScriptedConn()
			c := newRegistry(DefaultMaxBuffered).track(sc, "test", nil)
			got := make(chan readResult, 1)
			go func() {
				var r readResult
				if how == "Next" {
					tok, err := c.Next(bufio.ScanLines)
					r = readResult{string(tok), err}
				} else {
					buf := make([]byte, readBufSize) // large: Read reads straight into it
					n, err := c.Read(buf)
					r = readResult{string(buf[:n]), err}
				}
				got <- r
			}()
			<-sc.reading
			c.ask()       // the interrupt
			c.finish(nil) // the rollback, before the reader woke
			sc.results <- readResult{err: os.ErrDeadlineExceeded}
			select {
			case <-sc.reading: // it reads again
			case r := <-got:
				t.Fatalf("%s after an interrupt withdrawn: %q, %v; want it to read again", how, r.data, r.err)
			}
			sc.results <- readResult{data: "request\n"}
			want := "request"
			if how == "Read" {
				want = "request\n"
			}
			if r := await(t, got, how); r.data != want || r.err != nil {
				t.Fatalf("%s after an interrupt withdrawn: %q, %v; want %q", how, r.data, r.err, want)
			}
		})
	}
}

// TestConnOwnTimeout: a read that times out with no interrupt of the
// library's is the application's timeout, returned as it came, interrupt
// or not before it.
func TestConnOwnTimeout(t *testing.T) {
	sc := newScriptedConn()
	c := newRegistry(DefaultMaxBuffered).track(sc, "test", nil)
	c.ask()
	c.finish(nil) // an upgrade that asked and rolled back before this read
	for _, want := range []error{os.ErrDeadlineExceeded, io.EOF} {
		got := make(chan error, 1)
		go func() {
			_, err := c.Next(bufio.ScanLines)
			got <- err
		}()
		<-sc.reading
		sc.results <- readResult{err: want}
		if err := await(t, got, "Next"); err != want {
			t.Fatalf("Next: %v, want %v as the read returned it", err, want)
		}
	}
}

// TestConnInterruptWithdrawnRace: an upgrade asks a reading connection to
// park, and rolls back before the reader sees why its read ended (as in
// TestConnInterruptWithdrawn), over and over, with the ask landing
// anywhere in the reader's loop: also after a read's park check and
// before the read starts. The handler, which sets no deadline, must see
// its bytes or ErrPark, never the library's timeout.
func TestConnInterruptWithdrawnRace(t *testing.T) {
	const rounds = 10000
	dc := &deadlineConn{}
	c := newRegistry(DefaultMaxBuffered).track(dc, "test", nil)
	dc.interrupted = func() { c.finish(nil) } // the rollback, before the reader woke
	var stop atomic.Bool
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, readBufSize) // large: Read reads straight into it
		for !stop.Load() {
			switch _, err := c.Read(buf); err {
			case nil:
			case ErrPark:
				c.finish(nil) // the rollback, once the reader saw the ask
			default:
				got <- err
				return
			}
		}
		got <- nil
	}()
	for range rounds {
		c.ask()
		for c.Asked() && len(got) == 0 {
			runtime.Gosched()
		}
	}
	stop.Store(true)
	if err := await(t, got, "the reader"); err != nil {
		t.Fatalf("Read with asks withdrawn: %v; want only ErrPark or bytes", err)
	}
}

// deadlineConn is a net.Conn whose reads never block: one past its read
// deadline calls interrupted and times out, any other returns a line.
type deadlineConn struct {
	net.Conn    // nil: only Read and SetReadDeadline are used
	interrupted func()
	mu          sync.Mutex
	deadline    time.Time
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	d.mu.Lock()
	dl := d.deadline
	d.mu.Unlock()
	if !dl.IsZero() && dl.Before(time.Now()) {
		d.interrupted()
		return 0, os.ErrDeadlineExceeded
	}
	return copy(p, "line\n"), nil
}

func (d *deadlineConn) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deadline = t
	return nil
}
