package httphandoff

import (
	"net"

	"github.com/handoff-dev/handoff/tlshandoff"
)

// TLSConn returns the TLS connection beneath an HTTPS connection this
// package served, such as one an http.Handler hijacked (a wss
// WebSocket), so that the application can park it: from the hijack on,
// the library asks the tracked handoff.Conn beneath it (tc.Handoff()) to
// park as any other, and the application parks with tc.Park (or, as
// package wshandoff does, with tc.MarshalState inside a state of its
// own). It returns nil for any other net.Conn, and for a connection
// whose TLS cannot move (tc.Handoff() is nil then too).
//
// unread is the plaintext the connection was given back at an upgrade
// that rolled back and net/http has not read again (usually none): it
// comes before tc's, and is the caller's from then on (a second call
// returns none). Read it first, and move it with the connection.
func TLSConn(nc net.Conn) (tc *tlshandoff.Conn, unread []byte) {
	c, ok := nc.(*tlsConn)
	if !ok {
		return nil, nil
	}
	ts, ok := c.stream.(*tlsStream)
	if !ok {
		return nil, nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	unread, ts.unread = ts.unread, nil
	return ts.Conn, unread
}
