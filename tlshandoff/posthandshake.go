package tlshandoff

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// Handshake message types seen after the handshake.
const (
	msgNewSessionTicket = 4
	msgKeyUpdate        = 24
)

// ErrRenegotiation is returned when a TLS 1.2 client starts a new
// handshake on a moved connection. crypto/tls's server refuses
// renegotiation the same way: a no_renegotiation alert, and the
// connection ends.
var ErrRenegotiation = errors.New("tlshandoff: the client asked for renegotiation, which servers refuse")

// ErrUnsupportedMessage is wrapped by the error for a post-handshake
// message this package does not handle (only KeyUpdate is: servers do
// not request post-handshake authentication here). The connection ends
// with an unexpected_message alert rather than hang.
var ErrUnsupportedMessage = errors.New("tlshandoff: unsupported post-handshake message")

// postHandshakeLocked handles the handshake records a client may send
// after the handshake. Messages may span records; a KeyUpdate must end
// its record (RFC 8446, section 5.1), since what follows is under the
// next keys.
func (c *Conn) postHandshakeLocked(p []byte) error {
	if c.state.Version != tls.VersionTLS13 {
		c.w.mu.Lock()
		_ = c.writeRecordLocked(typeAlert, []byte{alertLevelWarning, alertNoRenegotiation})
		c.w.mu.Unlock()
		c.r.err = ErrRenegotiation
		return c.r.err
	}
	c.r.hsMsg = append(c.r.hsMsg, p...)
	for len(c.r.hsMsg) >= 4 {
		typ := c.r.hsMsg[0]
		n := int(c.r.hsMsg[1])<<16 | int(c.r.hsMsg[2])<<8 | int(c.r.hsMsg[3])
		if n > maxHandshakeMsg {
			return c.fatalLocked(alertUnexpectedMessage, fmt.Errorf("%w: type %d of %d bytes", ErrUnsupportedMessage, typ, n))
		}
		if len(c.r.hsMsg) < 4+n {
			break
		}
		body := c.r.hsMsg[4 : 4+n]
		c.r.hsMsg = c.r.hsMsg[4+n:]
		if typ != msgKeyUpdate {
			return c.fatalLocked(alertUnexpectedMessage, fmt.Errorf("%w: type %d", ErrUnsupportedMessage, typ))
		}
		if err := c.keyUpdateLocked(body, len(c.r.hsMsg) == 0); err != nil {
			return err
		}
	}
	if len(c.r.hsMsg) == 0 {
		c.r.hsMsg = nil
	}
	return c.emptyLocked()
}

// keyUpdateLocked handles a peer's KeyUpdate: its next records are
// under its next secret, and if it asks, ours are too, after a KeyUpdate
// of ours that says so.
func (c *Conn) keyUpdateLocked(body []byte, last bool) error {
	if len(body) != 1 || body[0] > 1 {
		return c.fatalLocked(alertIllegalParameter, errors.New("tlshandoff: malformed KeyUpdate"))
	}
	if !last {
		return c.fatalLocked(alertUnexpectedMessage, errors.New("tlshandoff: KeyUpdate not at the end of its record"))
	}
	if err := c.r.in.update(); err != nil {
		return c.fatalLocked(alertUnexpectedMessage, err)
	}
	if body[0] == 1 {
		c.w.mu.Lock()
		err := c.sendKeyUpdateLocked(false)
		c.w.mu.Unlock()
		if err != nil {
			c.r.err = err
			return err
		}
	}
	return nil
}

// KeyUpdate moves this side's records to its next traffic secret (TLS
// 1.3), and if requestPeer, asks the client to do the same with its own.
// On a TLS 1.2 connection, and one that cannot move, it returns an error
// and changes nothing.
func (c *Conn) KeyUpdate(requestPeer bool) error {
	if ok, why := c.Movable(); !ok {
		return fmt.Errorf("tlshandoff: KeyUpdate: the connection is crypto/tls's: %s", why)
	}
	if c.state.Version != tls.VersionTLS13 {
		return errors.New("tlshandoff: KeyUpdate needs TLS 1.3")
	}
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.sendKeyUpdateLocked(requestPeer)
}

// sendKeyUpdateLocked writes a KeyUpdate under the current keys, then
// moves to the next.
func (c *Conn) sendKeyUpdateLocked(request bool) error {
	req := byte(0)
	if request {
		req = 1
	}
	if err := c.writeRecordLocked(typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, req}); err != nil {
		return err
	}
	if err := c.w.out.update(); err != nil {
		c.w.err = err
		return err
	}
	return nil
}
