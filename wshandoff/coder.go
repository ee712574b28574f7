package wshandoff

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/coder/websocket"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// Accept accepts a WebSocket handshake as websocket.Accept (coder/websocket)
// does, over a Conn: the *websocket.Conn it returns moves to the new
// process at an upgrade (call OnParkCoder to give its state). The request
// must come over a connection that package handoff tracks, as for
// Upgrader.Upgrade.
//
// permessage-deflate with context takeover keeps a compression window
// per connection inside coder/websocket, which it does not export and
// which could not move: Accept negotiates no context takeover instead,
// so opts.CompressionMode websocket.CompressionContextTakeover is served
// as websocket.CompressionNoContextTakeover (every message compressed on
// its own; clients must accept the server's client_no_context_takeover,
// as RFC 7692 clients do).
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (*websocket.Conn, error) {
	var o websocket.AcceptOptions
	if opts != nil {
		o = *opts
	}
	if o.CompressionMode == websocket.CompressionContextTakeover {
		o.CompressionMode = websocket.CompressionNoContextTakeover
	}
	hw := &hijackWriter{ResponseWriter: w, wrap: func(c *Conn) net.Conn { return c }}
	hw.hs = func() Handshake { // coder sets the 101's headers before it hijacks
		return Handshake{
			Subprotocol: w.Header().Get("Sec-WebSocket-Protocol"),
			Extensions:  w.Header().Get("Sec-WebSocket-Extensions"),
		}
	}
	ws, err := websocket.Accept(hw, r, &o)
	if err != nil {
		return nil, err
	}
	coderConns.add(ws, hw.conn)
	return ws, nil
}

// ResumeCoder returns the coder/websocket Conn of a connection that a
// connection from Accept parked in the old process, as
// handoff.Options.Resume gets it, and the application's state (what
// OnParkCoder's function returned). The connection is ready to read and
// write: the client sees no new handshake. opts gives
// CompressionThreshold, OnPingReceived and OnPongReceived; what the
// handshake negotiated comes from the old process. An error wrapping
// ErrState means state is not one this package wrote, and one wrapping
// ErrTLS that it is a wss connection's (see ResumeCoderTLS): c is
// untouched; on any other error c is closed.
func ResumeCoder(c *handoff.Conn, state []byte, opts *websocket.AcceptOptions) (*websocket.Conn, []byte, error) {
	return ResumeCoderTLS(nil, c, state, opts)
}

// ResumeCoderTLS is ResumeCoder for a server that also serves wss
// (through httphandoff's HTTPS server): a connection that came over TLS
// goes on over TLS resumed with ts, the new process's
// tlshandoff.Server, on the same TCP connection and TLS session (see
// ResumeTLS). An error wrapping ErrState means state is not one this
// package wrote: c is untouched; on any other error c is closed.
func ResumeCoderTLS(ts *tlshandoff.Server, c *handoff.Conn, state []byte, opts *websocket.AcceptOptions) (*websocket.Conn, []byte, error) {
	conn, hs, app, err := ResumeTLS(ts, c, state)
	if errors.Is(err, ErrState) || errors.Is(err, ErrTLS) {
		return nil, nil, err
	}
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	o := websocket.AcceptOptions{InsecureSkipVerify: true, CompressionMode: websocket.CompressionDisabled}
	if opts != nil {
		o.CompressionThreshold = opts.CompressionThreshold
		o.OnPingReceived, o.OnPongReceived = opts.OnPingReceived, opts.OnPongReceived
	}
	if hs.Subprotocol != "" {
		o.Subprotocols = []string{hs.Subprotocol}
	}
	if hs.Extensions != "" {
		o.CompressionMode = websocket.CompressionNoContextTakeover
	}
	ws, err := websocket.Accept(&resumeWriter{header: http.Header{}, conn: conn}, resumeRequest(hs), &o)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("wshandoff: resume %s: %w", c.RemoteAddr(), err)
	}
	coderConns.add(ws, conn)
	return ws, app, nil
}

// OnParkCoder sets the function that gives ws's application state when it
// parks (see Conn.OnPark); ws must come from Accept or ResumeCoder.
func OnParkCoder(ws *websocket.Conn, f func() []byte) {
	if c := coderConns.get(ws); c != nil {
		c.OnPark(f)
	}
}

// MessagesWrittenCoder is Conn.MessagesWritten for ws, which must come
// from Accept or ResumeCoder; 0 for any other.
func MessagesWrittenCoder(ws *websocket.Conn) uint64 {
	if c := coderConns.get(ws); c != nil {
		return c.MessagesWritten()
	}
	return 0
}

// coderConns finds the Conn under a coder/websocket Conn, which does not
// say what it reads from. An entry goes when its Conn is closed or
// handed over.
var coderConns = connIndex{m: map[*websocket.Conn]*Conn{}}

type connIndex struct {
	mu sync.Mutex
	m  map[*websocket.Conn]*Conn
}

func (x *connIndex) add(ws *websocket.Conn, c *Conn) {
	x.mu.Lock()
	x.m[ws] = c
	x.mu.Unlock()
	c.mu.Lock()
	c.forget = func() {
		x.mu.Lock()
		delete(x.m, ws)
		x.mu.Unlock()
	}
	c.mu.Unlock()
}

func (x *connIndex) get(ws *websocket.Conn) *Conn {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.m[ws]
}
