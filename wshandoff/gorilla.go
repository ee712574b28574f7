package wshandoff

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/gorilla/websocket"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// Upgrader is a gorilla/websocket Upgrader whose connections move at an
// upgrade. Configure the embedded websocket.Upgrader as usual; Upgrade
// and Resume use it. gorilla/websocket's permessage-deflate is always
// negotiated without context takeover (server_no_context_takeover;
// client_no_context_takeover), so no compression window needs to move.
type Upgrader struct {
	websocket.Upgrader
}

// Upgrade upgrades the HTTP connection as websocket.Upgrader.Upgrade
// does, over a Conn: the *websocket.Conn it returns moves to the new
// process at an upgrade (call OnPark to give its state). The request
// must come over a connection that package handoff tracks (an
// httphandoff.Server's, or one served from a handoff.Listener);
// otherwise the hijack fails with ErrNotHandoff and Upgrade with it.
func (u *Upgrader) Upgrade(w http.ResponseWriter, r *http.Request, responseHeader http.Header) (*websocket.Conn, error) {
	hw := &hijackWriter{ResponseWriter: w, wrap: func(c *Conn) net.Conn { return &gorillaConn{Conn: c} }}
	ws, err := u.Upgrader.Upgrade(hw, r, responseHeader)
	if err != nil {
		return nil, err
	}
	return ws, nil
}

// Resume returns the *websocket.Conn of a connection that an Upgrader's
// connection parked in the old process, as handoff.Options.Resume gets
// it, and the application's state (what OnPark's function returned). The
// connection is ready to read and write: the client sees no new
// handshake. Read and write it as before the upgrade; handlers set on
// the old *websocket.Conn (SetPingHandler, SetReadLimit, ...) must be set
// again. The embedded websocket.Upgrader's ReadBufferSize,
// WriteBufferSize and WriteBufferPool apply; its CheckOrigin,
// Subprotocols and EnableCompression do not (the old process's handshake
// decided). An error wrapping ErrState means state is not one this
// package wrote, and one wrapping ErrTLS that it is a wss connection's
// (see ResumeTLS): c is untouched; on any other error c is closed.
func (u *Upgrader) Resume(c *handoff.Conn, state []byte) (*websocket.Conn, []byte, error) {
	return u.ResumeTLS(nil, c, state)
}

// ResumeTLS is Resume for a server that also serves wss (through
// httphandoff's HTTPS server): a connection that came over TLS goes on
// over TLS resumed with ts, the new process's tlshandoff.Server, on
// the same TCP connection and TLS session (see the package ResumeTLS).
// An error wrapping ErrState means state is not one this package wrote:
// c is untouched; on any other error c is closed.
func (u *Upgrader) ResumeTLS(ts *tlshandoff.Server, c *handoff.Conn, state []byte) (*websocket.Conn, []byte, error) {
	conn, hs, app, err := ResumeTLS(ts, c, state)
	if errors.Is(err, ErrState) || errors.Is(err, ErrTLS) {
		return nil, nil, err
	}
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	g := &gorillaConn{Conn: conn, swallow: true}
	ug := websocket.Upgrader{
		ReadBufferSize:    u.ReadBufferSize,
		WriteBufferSize:   u.WriteBufferSize,
		WriteBufferPool:   u.WriteBufferPool,
		CheckOrigin:       func(*http.Request) bool { return true },
		EnableCompression: hs.Extensions != "",
		Error:             func(http.ResponseWriter, *http.Request, int, error) {},
	}
	if hs.Subprotocol != "" {
		ug.Subprotocols = []string{hs.Subprotocol}
	}
	ws, err := ug.Upgrade(&resumeWriter{header: http.Header{}, conn: g}, resumeRequest(hs), nil)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("wshandoff: resume %s: %w", c.RemoteAddr(), err)
	}
	return ws, app, nil
}

// OnPark sets the function that gives ws's application state when it
// parks (see Conn.OnPark); ws must come from Upgrader.Upgrade or
// Upgrader.Resume.
func OnPark(ws *websocket.Conn, f func() []byte) {
	if g, ok := ws.NetConn().(*gorillaConn); ok {
		g.OnPark(f)
	}
}

// MessagesWritten is Conn.MessagesWritten for a gorilla connection made by
// an Upgrader or Resume; 0 for any other.
func MessagesWritten(ws *websocket.Conn) uint64 {
	if g, ok := ws.NetConn().(*gorillaConn); ok {
		return g.MessagesWritten()
	}
	return 0
}

// gorillaConn is the Conn as gorilla's Upgrade sees it: Upgrade writes its
// 101 response to the connection it hijacks, in one Write, before any
// frame. In the old process that response goes to the client and tells
// the extensions negotiated; in the new one it is swallowed.
type gorillaConn struct {
	*Conn
	swallow  bool // the new process: the 101 goes nowhere
	answered bool // the 101 has been written (or swallowed)
}

func (g *gorillaConn) Write(p []byte) (int, error) {
	if g.answered { // only Upgrade writes before it returns the *websocket.Conn
		return g.Conn.Write(p)
	}
	if !bytes.HasPrefix(p, []byte("HTTP/1.1 101 ")) {
		return 0, errors.New("wshandoff: gorilla/websocket wrote no 101 response first")
	}
	g.answered = true
	if g.swallow {
		return len(p), nil
	}
	g.Conn.mu.Lock()
	g.Conn.hs.Extensions = headerOf(p, "Sec-WebSocket-Extensions")
	g.Conn.hs.Subprotocol = headerOf(p, "Sec-WebSocket-Protocol")
	g.Conn.mu.Unlock()
	return g.Conn.s.Write(p) // the 101 is no frame: it bypasses the frame tracking
}

// headerOf returns the value of the header name in an HTTP response head.
func headerOf(head []byte, name string) string {
	for _, line := range strings.Split(string(head), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
