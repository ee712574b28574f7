//go:build linux

package handoff

import (
	"bufio"
	"io"
	"net"
	"os"
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
