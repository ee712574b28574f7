package httphandoff

import (
	"encoding/binary"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/handoff"
)

// bufioSize is net/http's read buffer per connection (bufio's default):
// a Read it makes asks for bufioSize minus what the buffer still holds,
// since bufio compacts before it reads.
const bufioSize = 4096

// conn is what net/http serves: a handoff.Conn that leaves at a moment
// when net/http holds nothing of it but up to 3 bytes it has read ahead
// (which conn remembers, and gives back), and writes nothing on leaving.
// Those moments (see doc.go) are:
//
//   - idle: after a response, net/http waits for the next request in a
//     Read (Peek(4) under the idle deadline);
//   - fresh: a new connection whose first Read has delivered nothing.
type conn struct {
	*handoff.Conn
	s *Server

	mu        sync.Mutex
	state     http.ConnState
	hasState  bool
	reading   bool    // a Read is in progress
	want      int     // len(p) of that Read
	delivered int64   // bytes Read has returned, ever
	last      [3]byte // the last bytes Read returned, oldest first
	lastN     int
	detached  bool      // Read said the connection is gone; Close keeps the fd
	resumed   bool      // strip CR/LF before the first request (net/http forgot the last method)
	idle      time.Time // the idle deadline net/http set, to carry to the next process
	carried   time.Time // the idle deadline carried from the last process, until the first byte
	asked     time.Time // the read deadline net/http set last
}

// newConn wraps a connection for net/http; idle is the idle deadline it
// had in the process it comes from (zero for none, or a new connection).
func newConn(s *Server, hc *handoff.Conn, idle time.Time) *conn {
	c := &conn{Conn: hc, s: s, resumed: true, carried: idle}
	hc.ParkWhen(c.onAsk)
	if !idle.IsZero() {
		// net/http sets no read deadline on a new connection unless it has
		// a header timeout: the carried one applies from now on.
		_ = hc.SetReadDeadline(idle)
	}
	return c
}

// SetReadDeadline records the idle deadline (the one net/http sets in
// StateIdle) and, until the first byte of a connection that came from
// another process, keeps the deadline it had there: net/http starts a
// served connection's timers anew, and a client idle across upgrades
// would otherwise never time out.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.asked = t
	if c.hasState && c.state == http.StateIdle && !t.IsZero() {
		c.idle = t
	}
	if !c.carried.IsZero() && (t.IsZero() || t.After(c.carried)) {
		t = c.carried
	}
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// endCarried drops the carried idle deadline once the next request has
// begun: from then on net/http's own deadlines apply. Called with mu held.
func (c *conn) endCarriedLocked() {
	if c.carried.IsZero() {
		return
	}
	c.carried = time.Time{}
	_ = c.Conn.SetReadDeadline(c.asked)
}

// onAsk: an upgrade wants the connection. If it is at a moment to leave,
// its blocked Read is woken to leave now; otherwise it leaves when it next
// gets there (Read checks).
func (c *conn) onAsk() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading && c.safeLocked(c.want) {
		c.detached = true
		_ = c.Conn.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// safeLocked reports whether a Read asking for want bytes is one at which
// the connection may leave.
func (c *conn) safeLocked(want int) bool {
	if !c.hasState || c.state == http.StateNew {
		return c.delivered == 0
	}
	return c.state == http.StateIdle && bufioSize-want <= c.lastN && bufioSize-want >= 0
}

func (c *conn) setState(st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state, c.hasState = st, true
}

func (c *conn) isDetached() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.detached
}

// Read reads for net/http, and is where a connection leaves: at a moment
// to leave, with an upgrade waiting, it gives back what net/http read
// ahead and returns a timeout, which net/http takes for a client gone
// quiet: it closes the connection (Close keeps it) without writing.
func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.Conn.Asked() && c.safeLocked(len(p)) {
		c.detached = true
	}
	if c.detached {
		c.mu.Unlock()
		return 0, c.detach(len(p), nil)
	}
	c.reading, c.want = true, len(p)
	c.mu.Unlock()

	n, err := c.Conn.Read(p)
	n = c.stripCRLF(p, n)

	c.mu.Lock()
	c.reading = false
	if c.detached {
		c.mu.Unlock()
		return 0, c.detach(len(p), p[:n]) // bytes that raced in stay for the next process
	}
	c.remember(p[:n])
	if n > 0 {
		c.endCarriedLocked()
	}
	c.mu.Unlock()
	if n == 0 && err == nil {
		return c.Read(p) // only CR/LF came: wait for more
	}
	return n, err
}

// detach gives back the bytes net/http holds (the last bufioSize-want
// delivered) and any that arrived meanwhile, and returns the error that
// makes net/http close the connection quietly.
func (c *conn) detach(want int, raced []byte) error {
	if len(raced) > 0 {
		c.Conn.Unread(raced)
	}
	c.mu.Lock()
	held := bufioSize - want
	tail := append([]byte(nil), c.last[c.lastN-held:c.lastN]...)
	c.mu.Unlock()
	if len(tail) > 0 {
		c.Conn.Unread(tail)
	}
	return &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
}

// stateMagic starts the state of a connection this package parks: its
// idle deadline follows, in Unix nanoseconds (0 for none).
const stateMagic = "httphandoff/1 "

func encodeState(idle time.Time) []byte {
	var ns int64
	if !idle.IsZero() {
		ns = idle.UnixNano()
	}
	return binary.BigEndian.AppendUint64([]byte(stateMagic), uint64(ns))
}

// IsHTTP reports whether a connection's state, as handoff.Options.Resume
// gets it, is that of an HTTP connection this package parked (rather
// than a hijacked one the application parked itself).
func IsHTTP(state []byte) bool {
	return len(state) == len(stateMagic)+8 && string(state[:len(stateMagic)]) == stateMagic
}

// decodeState returns the idle deadline a state carries.
func decodeState(state []byte) time.Time {
	if !IsHTTP(state) {
		return time.Time{}
	}
	ns := int64(binary.BigEndian.Uint64(state[len(stateMagic):]))
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// remember keeps the last 3 bytes delivered.
func (c *conn) remember(b []byte) {
	c.delivered += int64(len(b))
	for _, x := range b {
		if c.lastN == len(c.last) {
			copy(c.last[:], c.last[1:])
			c.lastN--
		}
		c.last[c.lastN] = x
		c.lastN++
	}
}

// stripCRLF drops CR and LF before a resumed connection's first request:
// net/http tolerates them after a POST only while it remembers the POST.
func (c *conn) stripCRLF(p []byte, n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.resumed || c.delivered > 0 {
		return n
	}
	i := 0
	for i < n && (p[i] == '\r' || p[i] == '\n') {
		i++
	}
	if i == n {
		return 0
	}
	c.resumed = false
	return copy(p, p[i:n])
}

// Write swallows what net/http writes while closing a detached connection
// (nothing, in the moments chosen).
func (c *conn) Write(p []byte) (int, error) {
	if c.isDetached() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Close closes the connection, unless it is leaving: then the library
// parks it once net/http is done with it (connState, StateClosed).
func (c *conn) Close() error {
	if c.isDetached() {
		return nil
	}
	return c.Conn.Close()
}

// CloseWrite is what net/http calls to end a response cleanly, which the
// embedded interface would hide.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// park hands the detached connection to the upgrade. If the upgrade rolled
// back, the connection is served again here, as a new one, its bytes
// first.
func (c *conn) park() {
	c.mu.Lock()
	idle := c.idle
	if c.delivered == 0 {
		idle = c.carried
	}
	c.mu.Unlock()
	switch err := c.Conn.Park(encodeState(idle)); err {
	case nil:
		c.s.serveAgain(newConn(c.s, c.Conn, idle))
	default:
		// handed over (the library closed this copy) or closed
	}
}
