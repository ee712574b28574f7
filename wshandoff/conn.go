package wshandoff

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// Handshake is what the opening handshake negotiated, which moves with
// the connection so that the new process's library frames as the old
// one did.
type Handshake struct {
	Subprotocol string // Sec-WebSocket-Protocol of the 101 response; "" for none
	Extensions  string // Sec-WebSocket-Extensions of the 101 response; "" for none
}

// Conn is a WebSocket connection's byte stream, after its opening
// handshake, as a net.Conn for a WebSocket library to read frames from and
// write frames to. It parks itself: when an upgrade asks for the
// connection, the Conn waits until the stream is at a message boundary
// in both directions (never inside a frame, never inside a fragmented
// message) and the library reading it asks for the next frame's first
// byte, which tells that the library holds no byte of it; then it calls
// the function given to OnPark for the application's state and parks
// the handoff.Conn with the bytes received and not yet read, the
// Handshake, and that state. Meanwhile writes that would begin a new
// message wait. If the upgrade rolls back, the library's read goes on as
// if nothing happened; if it hands over, the read and every write from
// then on fail with handoff.ErrHandedOver, and nothing reaches the
// client: no close frame, no FIN.
//
// So that the Conn knows what the library holds, its Read returns no byte
// beyond the end of the frame part (header or payload) being read, and a
// library must ask for more bytes only when it has used those it has:
// gorilla/websocket and coder/websocket read through a bufio.Reader
// this way (a Peek of exactly the header bytes it needs, a Read of at
// most the payload left). A library that reads ahead across frames, say
// with a Peek of the largest header size, would hide bytes from the
// park; do not serve one over a Conn.
//
// Pings, pongs and close frames: a control frame the library has read
// has been handled in this process (a ping answered before the library
// asks for its next frame); one it has not read moves with the
// connection and is handled by the new process. A connection whose
// library has read a close frame does not park: it is closing. One that
// has sent a close frame moves, and the new process's Conn writes no
// further frame.
//
// Over TLS (wss, served by httphandoff's HTTPS server) the frames are
// the plaintext of a tlshandoff.Conn over the handoff.Conn, and the
// connection parks with its TLS state (keys, sequence numbers, records
// read and not yet consumed) inside its state: the new process goes on
// with the same TLS session on the same TCP connection, without a
// handshake of either kind.
//
// Ownership: the Conn owns the handoff.Conn (and the tlshandoff.Conn
// over it); Close closes it (after a handover, that does nothing: the
// new process owns the connection).
type Conn struct {
	hc *handoff.Conn
	s  net.Conn         // the frames' stream: hc, or tc over it
	tc *tlshandoff.Conn // nil for a connection without TLS

	wmu sync.Mutex // serializes writers; held while a writer waits at the gate

	mu          sync.Mutex // guards what follows
	cond        sync.Cond  // on mu: a write ended, the gate opened
	in, out     frames
	reading     bool // a Read waits in the handoff.Conn at a message boundary
	interrupted bool // onAsk woke that Read with a past deadline
	writing     bool // a Write is in the handoff.Conn
	gate        bool // parking: a Write that would begin a message waits
	gone        bool // handed over
	closeSent   bool // moved after its close frame: no further frame goes out
	deadline    time.Time
	pre         []byte // over TLS: plaintext that came before tc's (read ahead at the hijack), read first
	hs          Handshake
	onPark      func() []byte
	forget      func() // drops the Conn from an index, once it is closed or handed over
}

var _ net.Conn = (*Conn)(nil)

// observe, if set (by tests), hears of a connection asked to park ("waits"
// if it is not at a message boundary then) and of each park ("parks").
var observe func(c *Conn, what string)

// Wrap makes the Conn of a connection whose opening handshake has been
// answered, with hs what it negotiated. hc must be read and written only
// through the Conn from now on. An upgrade then asks the Conn, not its
// reader, to park (handoff.Conn.ParkWhen).
func Wrap(hc *handoff.Conn, hs Handshake) *Conn { return wrap(hc, nil, nil, hs) }

// wrap makes the Conn of hc, or of tc over it, with pre the plaintext
// that comes before tc's.
func wrap(hc *handoff.Conn, tc *tlshandoff.Conn, pre []byte, hs Handshake) *Conn {
	c := &Conn{hc: hc, s: hc, tc: tc, pre: pre, in: newFrames(), out: newFrames(), hs: hs}
	if tc != nil {
		c.s = tc
	}
	c.cond.L = &c.mu
	hc.ParkWhen(c.ask)
	if hc.Asked() { // asked before ParkWhen: the ask went to the handler we replaced
		c.ask()
	}
	return c
}

// Resume makes the Conn of a connection parked by a Conn in the old
// process, from the handoff.Conn and the state Options.Resume got. It
// returns what the handshake negotiated and the application's state,
// for the library to be set up over the Conn as it was (Upgrader.Resume
// and ResumeCoder do this). An error wrapping ErrState means the state
// is not one this package wrote, and one wrapping ErrTLS that it is a
// wss connection's (use ResumeTLS): the handoff.Conn is untouched.
func Resume(hc *handoff.Conn, state []byte) (*Conn, Handshake, []byte, error) {
	return ResumeTLS(nil, hc, state)
}

// ResumeTLS is Resume for a server that also serves wss: the TLS of a
// connection that came over TLS is resumed with ts (the new process's
// tlshandoff.Server, httphandoff.Server.TLS's), on the same TCP
// connection and TLS session; a connection without TLS is resumed as
// Resume does (ts may then be nil). On error the handoff.Conn is
// untouched.
func ResumeTLS(ts *tlshandoff.Server, hc *handoff.Conn, state []byte) (*Conn, Handshake, []byte, error) {
	p, err := decodeState(state)
	if err != nil {
		return nil, Handshake{}, nil, err
	}
	var tc *tlshandoff.Conn
	if p.tls != nil {
		if ts == nil {
			return nil, Handshake{}, nil, fmt.Errorf("wshandoff: resume %s: %w", hc.RemoteAddr(), ErrTLS)
		}
		if tc, _, err = ts.Resume(hc, p.tls); err != nil {
			return nil, Handshake{}, nil, fmt.Errorf("wshandoff: resume %s: %w", hc.RemoteAddr(), err)
		}
	}
	c := wrap(hc, tc, p.pre, p.hs)
	c.closeSent = p.closeSent
	return c, p.hs, p.app, nil
}

// ErrTLS is wrapped by Resume's error for a wss connection's state,
// which needs ResumeTLS (or Upgrader.ResumeTLS, ResumeCoderTLS).
var ErrTLS = errors.New("wshandoff: a connection over TLS: resume it with its tlshandoff.Server")

// OnPark sets the function that returns the application's state for the
// connection when it parks. It is called once per park, from inside the
// library's read (in the goroutine that reads the connection, between two
// messages), while every write that would begin a message waits; it must
// not read, write or close the connection. Nil, the default, parks with
// an empty state.
func (c *Conn) OnPark(f func() []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onPark = f
}

// MessagesWritten returns how many data messages (text or binary) have
// been written whole through the Conn in this process. Read in OnPark's
// function, it tells a message whose write ended before the park (counted)
// from one whose write waits at the park's gate (not counted: not sent,
// and after a handover its write fails with handoff.ErrHandedOver), so
// that the state carries exactly the messages not sent: note the count
// before each write.
func (c *Conn) MessagesWritten() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.messages
}

// Handshake returns what the opening handshake negotiated.
func (c *Conn) Handshake() Handshake {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hs
}

// Handoff returns the handoff.Conn under the Conn.
func (c *Conn) Handoff() *handoff.Conn { return c.hc }

// ask is the handoff.Conn's ParkWhen callback: it wakes a Read that waits
// for the next frame outside any message; a connection elsewhere parks
// when its Read gets there.
func (c *Conn) ask() {
	c.mu.Lock()
	boundary := c.in.atMessageBoundary() && !c.in.closed
	if c.reading && boundary && !c.interrupted {
		c.interrupted = true
		_ = c.hc.Conn.SetReadDeadline(time.Unix(1, 0))
	}
	c.mu.Unlock()
	if observe != nil && !boundary {
		observe(c, "waits")
	}
}

// Read reads frame bytes for the library, no more than the frame part it
// is in; at a message boundary it parks first if an upgrade asks.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		c.mu.Lock()
		if c.gone {
			c.mu.Unlock()
			return 0, handoff.ErrHandedOver
		}
		boundary := c.in.atMessageBoundary() && !c.in.closed
		if boundary && c.hc.Asked() {
			c.mu.Unlock()
			if err := c.park(); err != nil {
				return 0, err
			}
			continue
		}
		n := c.in.limit(len(p))
		if len(c.pre) > 0 {
			n = copy(p[:n], c.pre)
			c.pre = c.pre[n:]
			c.in.feed(p[:n])
			c.mu.Unlock()
			return n, nil
		}
		c.reading = boundary
		c.mu.Unlock()

		n, err := c.s.Read(p[:n])

		c.mu.Lock()
		c.reading = false
		c.in.feed(p[:n])
		woken := c.interrupted
		if woken {
			c.interrupted = false
			_ = c.s.SetReadDeadline(c.deadline)
		}
		c.mu.Unlock()
		if n > 0 || err == nil {
			return n, err
		}
		if woken && errors.Is(err, os.ErrDeadlineExceeded) {
			continue // ours: park at the top of the loop
		}
		return 0, err
	}
}

// park parks the connection, the stream being at a message boundary on
// the way in; it returns nil if the upgrade rolled back (or asked no
// more), and the error to give the library otherwise.
func (c *Conn) park() error {
	c.mu.Lock()
	c.gate = true
	// Writers finish the message they are in; then none begins another.
	// An upgrade that gives up meanwhile (it asks no more) ends the wait.
	var stop chan struct{}
	for (c.writing || !c.out.atMessageBoundary()) && c.hc.Asked() {
		if stop == nil {
			stop = make(chan struct{})
			defer close(stop)
			go c.recheck(stop)
		}
		c.cond.Wait()
	}
	onPark, p := c.onPark, parked{hs: c.hs, closeSent: c.closeSent || c.out.closed, pre: c.pre}
	c.mu.Unlock()

	var err error
	if c.hc.Asked() {
		if onPark != nil {
			p.app = onPark()
		}
		if observe != nil {
			observe(c, "parks")
		}
		err = c.parkStream(p)
	}

	c.mu.Lock()
	c.gate = false
	if errors.Is(err, handoff.ErrHandedOver) {
		c.gone = true
		if c.tc != nil {
			c.tc.Forget() // its keys are the new process's now
		}
	}
	c.cond.Broadcast()
	forget := c.forgetLocked()
	c.mu.Unlock()
	forget()
	return err
}

// parkStream parks the handoff.Conn with p and, over TLS, the TLS
// state, which nothing reads or writes meanwhile: the reader is here,
// and writers wait at the gate.
func (c *Conn) parkStream(p parked) error {
	if c.tc != nil {
		st, err := c.tc.MarshalState(nil)
		if err != nil {
			return err
		}
		defer clear(st)
		p.tls = st
	}
	state := p.encode()
	defer clear(state)
	return c.hc.Park(state)
}

// forgetLocked returns the function that drops the Conn from its index
// once it is gone here (handed over or closed), and nil while it serves.
func (c *Conn) forgetLocked() func() {
	f := c.forget
	if !c.gone || f == nil {
		return func() {}
	}
	c.forget = nil
	return f
}

// recheck wakes park's wait now and then, so that it sees an upgrade
// that stopped asking, until stop is closed.
func (c *Conn) recheck(stop chan struct{}) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.mu.Lock()
			c.cond.Broadcast()
			c.mu.Unlock()
		}
	}
}

// Write writes frame bytes from the library. One that would begin a
// message (or a control frame outside one) waits while the connection
// parks; after a handover it fails with handoff.ErrHandedOver.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	for c.gate && c.out.atMessageBoundary() && !c.gone {
		c.cond.Wait()
	}
	switch {
	case c.gone:
		c.mu.Unlock()
		return 0, handoff.ErrHandedOver
	case c.closeSent && c.out.atFrameStart():
		// The old process sent the close frame: a close frame now would be
		// a second one, anything else comes after it.
		c.mu.Unlock()
		if opcodeAt(p) == opClose {
			return len(p), nil
		}
		return 0, net.ErrClosed
	}
	c.writing = true
	c.mu.Unlock()

	n, err := c.s.Write(p)

	c.mu.Lock()
	c.writing = false
	c.out.feed(p[:n])
	if errors.Is(err, handoff.ErrHandedOver) {
		c.gone = true
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return n, err
}

// Close closes the connection in this process; after a handover it does
// nothing.
func (c *Conn) Close() error {
	c.mu.Lock()
	f := c.forget
	c.forget = nil
	c.mu.Unlock()
	if f != nil {
		f()
	}
	if c.isGone() {
		return nil
	}
	return c.s.Close()
}

func (c *Conn) isGone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gone
}

// TLS returns the tlshandoff.Conn the frames travel in, for a wss
// connection (its ConnectionState, say); nil for a ws one.
func (c *Conn) TLS() *tlshandoff.Conn { return c.tc }

// LocalAddr returns the server's address of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.s.LocalAddr() }

// RemoteAddr returns the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.s.RemoteAddr() }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the library's read deadline; a park keeps it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.interrupted { // set again once the woken Read has returned
		return nil
	}
	return c.s.SetReadDeadline(t)
}

// SetWriteDeadline sets the library's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }
