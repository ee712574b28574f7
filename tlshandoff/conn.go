package tlshandoff

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/handoff-dev/handoff/handoff"
)

// Conn is a server-side TLS connection. crypto/tls does its handshake;
// then, if the connection can move (Movable), this package runs its
// record layer, whose whole state MarshalState captures at a record
// boundary; otherwise crypto/tls serves it to the end, as tls.Server
// would.
//
// Ownership: the Conn owns the net.Conn it was made from; Close closes
// it (after a close_notify). A moved Conn owns the transport given to
// Resume.
type Conn struct {
	srv *Server
	hs  *hsConn   // the handshake's transport; nil in a resumed Conn
	tc  *tls.Conn // the handshake, and the connection if it cannot move

	hsMu     sync.Mutex // held across the handshake
	hsDone   atomic.Bool
	hsErr    error
	movable  bool
	why      string
	state    tls.ConnectionState
	facts    Facts
	unmoving bool // counted among the open connections that cannot move

	// raw is the transport of the record layer: the TCP connection, or
	// the *handoff.Conn that tracks it.
	raw net.Conn
	r   reader
	w   writer
}

var _ net.Conn = (*Conn)(nil)

// Handshake runs the handshake if it has not run yet, as
// tls.Conn.Handshake. Read and Write call it.
func (c *Conn) Handshake() error { return c.HandshakeContext(context.Background()) }

// HandshakeContext is Handshake bounded by ctx.
func (c *Conn) HandshakeContext(ctx context.Context) error {
	if c.hsDone.Load() {
		return c.hsErr
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.hsDone.Load() {
		return c.hsErr
	}
	if c.hsErr = c.tc.HandshakeContext(ctx); c.hsErr == nil {
		c.switchOver()
	} else {
		c.hs.passthrough.Store(true)
		c.hs.forget()
	}
	c.hsDone.Store(true)
	return c.hsErr
}

// switchOver takes the connection from crypto/tls once the handshake is
// over, if it can move.
func (c *Conn) switchOver() {
	c.state = c.tc.ConnectionState()
	in, out, facts, why := halves(c.hs, c.state)
	if why == "" && c.hs.left != 0 {
		why = "crypto/tls stopped inside a record"
	}
	if why == "" && c.srv.opts.Stay != nil && c.srv.opts.Stay(c.state) {
		why = whyStay
	}
	c.facts = facts
	if why != "" {
		c.why = why
		c.hs.passthrough.Store(true)
		c.hs.forget()
		c.srv.cannotMove(c)
		return
	}
	c.r.in, c.w.out = in, out
	c.r.rbuf = append(make([]byte, 0, max(len(c.hs.rbuf), 4096)), c.hs.rbuf...)
	c.raw = c.srv.track(c.hs.Conn)
	c.hs.forget()
	c.hs = nil
	c.movable = true
	c.srv.moving()
}

// Movable reports whether the connection's record layer is this
// package's, so that it can move to another process (MarshalState, Park),
// and if not, why: a suite or version it does not carry, or a TLS 1.2
// session resumed with a master secret crypto/tls does not log. It runs
// the handshake first.
func (c *Conn) Movable() (bool, string) {
	if err := c.Handshake(); err != nil {
		return false, "handshake failed: " + err.Error()
	}
	return c.movable, c.why
}

// Handoff returns the handoff.Conn that carries the connection's records
// and that an upgrade asks to park (ParkWhen, Asked), once its handshake
// is over; nil if it has none: the connection cannot move, or the Server
// has no Upgrader. The Conn owns it: use it to watch for upgrades, not to
// read, write or close.
func (c *Conn) Handoff() *handoff.Conn {
	if !c.hsDone.Load() || !c.movable {
		return nil
	}
	hc, _ := c.raw.(*handoff.Conn)
	return hc
}

// Facts returns what the switch to the record layer found (zero for a
// connection that cannot move or was resumed from a state).
func (c *Conn) Facts() Facts { return c.facts }

// ConnectionState returns the connection's TLS parameters. In a Conn
// rebuilt by Resume only Version, CipherSuite, NegotiatedProtocol,
// ServerName, DidResume, HandshakeComplete and PeerCertificates are set
// (not VerifiedChains: verify again from PeerCertificates if needed).
func (c *Conn) ConnectionState() tls.ConnectionState {
	if !c.hsDone.Load() {
		return c.tc.ConnectionState()
	}
	if !c.movable && c.tc != nil {
		return c.tc.ConnectionState()
	}
	return c.state
}

// Read reads application data.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if !c.movable {
		return c.tc.Read(p)
	}
	return c.read(p)
}

// Write writes application data, in records of at most 16 KiB.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if !c.movable {
		return c.tc.Write(p)
	}
	return c.write(p)
}

// Close sends close_notify and closes the transport.
func (c *Conn) Close() error {
	if !c.hsDone.Load() || !c.movable {
		err := c.tc.Close()
		c.srv.closedUnmoving(c)
		return err
	}
	c.w.mu.Lock()
	if c.w.err == nil {
		_ = c.raw.SetWriteDeadline(time.Now().Add(closeNotifyTimeout))
		_ = c.writeRecordLocked(typeAlert, []byte{alertLevelWarning, alertCloseNotify})
	}
	c.w.err = net.ErrClosed
	c.w.mu.Unlock()
	return c.raw.Close()
}

// closeNotifyTimeout bounds Close's close_notify, as crypto/tls's does,
// for a peer that does not read.
const closeNotifyTimeout = 5 * time.Second

// transport is the connection the deadlines and addresses are those of.
func (c *Conn) transport() net.Conn {
	if c.hsDone.Load() && c.movable {
		return c.raw
	}
	return c.tc
}

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.transport().LocalAddr() }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.transport().RemoteAddr() }

// SetDeadline sets the read and write deadlines of the transport.
func (c *Conn) SetDeadline(t time.Time) error { return c.transport().SetDeadline(t) }

// SetReadDeadline sets the transport's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.transport().SetReadDeadline(t) }

// SetWriteDeadline sets the transport's write deadline. A Write that
// times out in the middle of a record leaves the connection unusable, as
// in crypto/tls.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.transport().SetWriteDeadline(t) }
