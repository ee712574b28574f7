package httphandoff

import (
	"encoding/binary"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/handoff-dev/handoff/handoff"
)

// bufioSize is net/http's read buffer per connection (bufio's default):
// a Read it makes asks for bufioSize minus what the buffer still holds,
// since bufio compacts before it reads.
const bufioSize = 4096

// maxHead is the longest request head a connection can leave in the
// middle of: conn keeps a copy of the head it is delivering, to give back
// whole. A longer head is answered here first.
const maxHead = 16 << 10

// phase is where net/http is in a connection's cycle, as conn sees it from
// the ConnState hooks and the read deadlines net/http sets (Go 1.26,
// src/net/http/server.go: serve and readRequest):
//
//	StateNew             fresh: SetReadDeadline(header timeout)? head Reads
//	                     SetReadDeadline(ReadTimeout) once the head is parsed
//	StateIdle            idleHook: SetReadDeadline(idle deadline)
//	                     peek: the Reads of Peek(4)
//	                     SetReadDeadline(header timeout)
//	                     head: the head's Reads
//	                     SetReadDeadline(ReadTimeout) once the head is parsed
//	StateActive          busy: body, handler, background read
type phase int

const (
	phaseFresh    phase = iota // StateNew: the first request's head, if any bytes came
	phaseIdleHook              // StateIdle reported; net/http sets the idle deadline next
	phasePeek                  // waiting for the next request: Peek(4) under the idle deadline
	phaseHead                  // reading a request head
	phaseBusy                  // a request being served: its body, its handler
)

// conn is what net/http serves: a handoff.Conn that leaves at a moment
// when net/http holds nothing of it but bytes of a request head not yet
// answered (which conn keeps a copy of, and gives back), and writes
// nothing on leaving. Those moments are the phases fresh, peek and head
// (see phase): no handler has run for the bytes, so the next process can
// read them as if they had just come.
type conn struct {
	stream               // what net/http reads and writes
	hc     *handoff.Conn // the tracked connection beneath: asked, parked
	face   net.Conn      // what net/http serves: c, or c with its TLS state (tlsConn)
	s      *Server

	mu        sync.Mutex
	phase     phase
	reading   bool    // a Read is in progress
	want      int     // len(p) of that Read
	delivered int64   // bytes Read has returned, ever
	last      [3]byte // the last bytes Read returned, oldest first
	lastN     int
	head      []byte    // the bytes of the request head net/http holds, if known; reused from request to request
	headKnown bool      // head is all of them: the connection may leave
	peekRead  bool      // a Read of the idle Peek(4) happened
	gaveBack  int       // bytes of a head given back to the handoff.Conn
	resumed   bool      // strip CR/LF before the first request (net/http forgot the last method)
	idle      time.Time // the deadline in force while it waits for a request, to carry to the next process
	hold      bool      // until the first byte, the deadline carried from the last process holds
	asked     time.Time // the read deadline net/http set last
	askedAt   time.Time // when it set it, while hold

	// detached: Read said the connection is gone; Close keeps the fd.
	// Stored with mu held, loaded without it by Write, Close, CloseWrite
	// and connState, which act on it after the load as they did after
	// unlocking: a lock around the load orders nothing more (Write's
	// once per response).
	detached atomic.Bool

	// busy: phase is phaseBusy and hold is false. Stored with mu held,
	// by setPhaseLocked and endHoldLocked; SetReadDeadline loads it
	// without mu (see there).
	busy atomic.Bool
}

// stream is what a conn serves net/http from and parks: the
// handoff.Conn itself for HTTP, TLS over it for HTTPS (tlsStream).
type stream interface {
	net.Conn
	// Unread gives back bytes read, to be read first here or, parked,
	// in the next process.
	Unread(p []byte)
	// Park parks the connection with httphandoff's state for it, as
	// handoff.Conn.Park.
	Park(state []byte) error
}

// newConn wraps a connection for net/http: st over hc (st is hc for
// HTTP). carried says whether it comes from a process that served it
// (another one, or this one before a rollback); then idle is the
// deadline it waited for its next request under there (zero for none),
// which holds until its first byte comes.
func newConn(s *Server, st stream, hc *handoff.Conn, carried bool, idle time.Time) *conn {
	c := &conn{stream: st, hc: hc, s: s, resumed: true, headKnown: true, idle: idle, hold: carried}
	c.face = c
	if ts, ok := st.(*tlsStream); ok {
		c.face = &tlsConn{conn: c, tc: ts.Conn}
	}
	hc.ParkWhen(c.onAsk)
	if carried {
		// net/http sets no read deadline on a new connection, or its
		// header timeout: a client merely idle is under its idle one.
		_ = st.SetReadDeadline(idle)
	}
	return c
}

// SetReadDeadline follows net/http's cycle (see phase) and, until the
// first byte of a connection that came from another process, keeps the
// deadline it waited under there: net/http serves it as just accepted,
// and would start its timers anew, or apply its header timeout to a
// client that is merely idle.
func (c *conn) SetReadDeadline(t time.Time) error {
	if c.busy.Load() {
		// Why no mu while busy: there SetReadDeadline changes nothing of
		// conn's but asked, which only endHoldLocked reads, and only
		// while hold, which never comes back once gone. Nothing else
		// under mu sets a deadline while busy: onAsk and Read's detach
		// do only at a moment to leave, endHoldLocked only while hold.
		// The phase leaves busy only by net/http's serving goroutine
		// (StateIdle), after the handler and its background read are
		// done, so never during a call made while busy: net/http's three
		// a request (startBackgroundRead's, abortPendingRead's two), a
		// handler's through ResponseController, a hijacker's (hijacked,
		// a connection stays busy). Those go to handoff.Conn as before,
		// which orders them with the library's interrupts itself.
		return c.stream.SetReadDeadline(t)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = t
	if c.hold {
		c.askedAt = time.Now() // endHoldLocked's only: net/http calls this thrice a request
	}
	switch c.phase {
	case phaseFresh:
		if c.delivered > 0 {
			c.endHeadLocked() // the head is parsed
		} else if !c.hold {
			c.idle = t // the header timeout, from the accept on
		}
	case phaseIdleHook:
		c.setPhaseLocked(phasePeek)
		c.idle, c.peekRead = t, false
	case phasePeek:
		c.setPhaseLocked(phaseHead) // Peek(4) returned
		if !c.peekRead {
			c.headKnown = false // the head was read ahead with a request before: unknown
		}
	case phaseHead:
		c.endHeadLocked()
	}
	if c.hold {
		return nil
	}
	return c.stream.SetReadDeadline(t)
}

// endHeadLocked: net/http has parsed a request head; what follows is
// its body and its handler.
func (c *conn) endHeadLocked() {
	c.setPhaseLocked(phaseBusy)
	c.head, c.headKnown = c.head[:0], false
}

// setPhaseLocked moves the connection to phase p; busy follows.
func (c *conn) setPhaseLocked(p phase) {
	c.phase = p
	c.busy.Store(p == phaseBusy && !c.hold)
}

// endHoldLocked drops the carried deadline once the next request has
// begun: from then on net/http's own apply, counted from now, as net/http
// counts its header timeout from the first bytes of a request.
func (c *conn) endHoldLocked() {
	if !c.hold {
		return
	}
	c.hold = false
	c.busy.Store(c.phase == phaseBusy)
	t := c.asked
	if !t.IsZero() {
		t = time.Now().Add(t.Sub(c.askedAt))
	}
	_ = c.stream.SetReadDeadline(t)
}

// mayEndHoldLocked ends the carried deadline before the first byte if it
// has passed while the connection moved and a request waits in the
// kernel: the client sent it before it could see a close, and the
// deadline, already past, would make the Read fail without reading, and
// the close reset the connection.
func (c *conn) mayEndHoldLocked() {
	if c.hold && !c.idle.IsZero() && !time.Now().Before(c.idle) && pending(c.hc.Conn) {
		c.endHoldLocked()
	}
}

// onAsk: an upgrade wants the connection. If it is at a moment to leave,
// its blocked Read is woken to leave now; otherwise it leaves when it next
// gets there (Read checks).
func (c *conn) onAsk() {
	c.mu.Lock()
	waits := false
	switch {
	case c.reading && c.safeLocked(c.want):
		c.detached.Store(true)
		_ = c.hc.Conn.SetReadDeadline(time.Unix(1, 0)) // the TCP connection, beneath any TLS
	case !c.mayLeaveLocked():
		waits = true
	}
	c.mu.Unlock()
	if waits {
		c.s.observe(c, "waits", 0)
	}
}

// mayLeaveLocked reports whether the connection is in a phase it may
// leave in, at its next Read.
func (c *conn) mayLeaveLocked() bool {
	switch c.phase {
	case phaseFresh, phaseHead:
		return c.headKnown
	case phasePeek:
		return c.headKnown || !c.peekRead
	case phaseIdleHook:
		return true // it reads in phasePeek next
	}
	return false
}

// safeLocked reports whether a Read asking for want bytes is one at which
// the connection may leave: net/http holds nothing of it but the bytes of
// a request head, no handler has run for them, and conn has them all.
// In the idle Peek, bufio holds the bufioSize-want bytes delivered last;
// they begin the head.
func (c *conn) safeLocked(want int) bool {
	switch c.phase {
	case phasePeek:
		return c.headKnown && bufioSize-want == len(c.head)
	case phaseFresh, phaseHead:
		return c.headKnown
	}
	return false
}

// notePeekLocked: the idle Peek's first Read tells what bufio holds,
// bufioSize-want bytes, the last ones delivered: the next head begins
// with them.
func (c *conn) notePeekLocked(want int) {
	if c.phase != phasePeek || c.peekRead {
		return
	}
	held := bufioSize - want
	c.peekRead = true
	c.headKnown = held >= 0 && held <= c.lastN
	c.head = c.head[:0]
	if c.headKnown {
		c.head = append(c.head, c.last[c.lastN-held:c.lastN]...)
	}
}

func (c *conn) setState(st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateNew:
		c.setPhaseLocked(phaseFresh)
	case http.StateIdle:
		c.setPhaseLocked(phaseIdleHook)
		c.head, c.headKnown = c.head[:0], false
	default:
		c.endHeadLocked()
	}
}

func (c *conn) isDetached() bool { return c.detached.Load() }

// Read reads for net/http, and is where a connection leaves: at a moment
// to leave, with an upgrade waiting, it gives back the head net/http
// holds and returns a timeout. net/http takes that for a client gone
// quiet and closes the connection (Close keeps it) without writing: it
// had nothing, or whole lines of a head; if it had part of a line, it
// parses that part as a line and fails, and what it writes is dropped.
func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.notePeekLocked(len(p))
	if !c.detached.Load() && c.safeLocked(len(p)) && c.hc.Asked() {
		c.detached.Store(true)
	}
	if c.detached.Load() {
		c.mu.Unlock()
		return 0, c.detach(nil)
	}
	c.reading, c.want = true, len(p)
	c.mayEndHoldLocked()
	c.mu.Unlock()

	n, err := c.stream.Read(p)

	c.mu.Lock()
	n = c.stripCRLFLocked(p, n)
	c.reading = false
	if c.detached.Load() {
		c.mu.Unlock()
		return 0, c.detach(p[:n]) // bytes that raced in stay for the next process
	}
	c.remember(p[:n])
	if n > 0 {
		c.endHoldLocked()
	}
	c.mu.Unlock()
	if n == 0 && err == nil {
		return c.Read(p) // only CR/LF came: wait for more
	}
	return n, err
}

// detach gives back the head net/http holds and any bytes that arrived
// meanwhile, once (net/http may read again before it gives up), and
// returns the error that makes net/http close the connection quietly.
func (c *conn) detach(raced []byte) error {
	c.mu.Lock()
	head := c.head
	c.head = nil
	c.gaveBack += len(head)
	c.mu.Unlock()
	if len(raced) > 0 {
		c.stream.Unread(raced)
	}
	if len(head) > 0 {
		c.stream.Unread(head)
	}
	return &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
}

// stateMagic starts the state of a connection this package parks: its
// idle deadline follows, in Unix nanoseconds (0 for none).
const stateMagic = "httphandoff/1 "

// stateLen is the length of that state.
const stateLen = len(stateMagic) + 8

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
	return len(state) == stateLen && string(state[:len(stateMagic)]) == stateMagic
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

// remember keeps the last 3 bytes delivered, and the head's bytes while
// it may leave with them. Called with mu held.
func (c *conn) remember(b []byte) {
	c.delivered += int64(len(b))
	if c.headKnown && c.phase != phaseBusy && c.phase != phaseIdleHook {
		if len(c.head)+len(b) > maxHead {
			c.head, c.headKnown = nil, false // answered here first
		} else {
			c.head = append(c.head, b...)
		}
	}
	if len(b) >= len(c.last) {
		c.lastN = copy(c.last[:], b[len(b)-len(c.last):])
		return
	}
	keep := min(c.lastN, len(c.last)-len(b)) // of the last ones, oldest first
	copy(c.last[:], c.last[c.lastN-keep:c.lastN])
	c.lastN = keep + copy(c.last[keep:], b)
}

// stripCRLFLocked drops CR and LF before a resumed connection's first
// request: net/http tolerates them after a POST only while it remembers
// the POST.
func (c *conn) stripCRLFLocked(p []byte, n int) int {
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
	return c.stream.Write(p)
}

// Close closes the connection, unless it is leaving: then the library
// parks it once net/http is done with it (connState, StateClosed).
func (c *conn) Close() error {
	if c.isDetached() {
		return nil
	}
	return c.stream.Close()
}

// CloseWrite is what net/http calls to end a response cleanly, which the
// embedded interface would hide. Over TLS it does nothing: a TCP
// half-close without close_notify would look like a truncation to the
// client, and Close sends close_notify.
func (c *conn) CloseWrite() error {
	if c.isDetached() || c.face != net.Conn(c) {
		return nil
	}
	if cw, ok := c.hc.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// park hands the detached connection to the upgrade. If the upgrade rolled
// back, the connection is served again here, as a new one, its bytes
// first.
func (c *conn) park() {
	c.mu.Lock()
	idle, gaveBack := c.idle, c.gaveBack
	c.mu.Unlock()
	c.s.observe(c, "parks", gaveBack)
	switch err := c.stream.Park(encodeState(idle)); err {
	case nil:
		c.s.serveAgain(newConn(c.s, c.stream, c.hc, true, idle))
	default:
		// handed over (the library closed this copy) or closed
	}
}
