package wshandoff

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/httphandoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// ErrNotHandoff is returned by a hijack of a connection that package
// handoff does not track (served neither by httphandoff nor from a
// handoff.Listener, or over TLS that cannot move: see
// tlshandoff.Conn.Movable): it could not move, and is refused rather
// than served as if it could.
var ErrNotHandoff = errors.New("wshandoff: the connection is not a handoff connection")

// bufSize is the size of the bufio.Reader and Writer a hijack returns.
const bufSize = 4096

// hijackWriter is the http.ResponseWriter a library upgrades through in
// the old process: its Hijack returns the connection as a Conn, with the
// bytes net/http read ahead given back to the handoff.Conn.
type hijackWriter struct {
	http.ResponseWriter
	wrap func(c *Conn) net.Conn // what the library gets, made from the Conn
	hs   func() Handshake       // what the handshake negotiated, known at the hijack
	conn *Conn
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("wshandoff: the http.ResponseWriter is not an http.Hijacker")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	var early []byte // frames the client sent early are the stream's
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ = brw.Reader.Peek(n)
	}
	hc, tc, pre := streamOf(nc)
	if hc == nil {
		nc.Close()
		return nil, nil, fmt.Errorf("wshandoff: hijack %s: %w", nc.RemoteAddr(), ErrNotHandoff)
	}
	if tc != nil { // plaintext: it stays above TLS
		pre = append(append([]byte(nil), early...), pre...)
	} else if len(early) > 0 {
		hc.Unread(early)
	}
	var hs Handshake
	if w.hs != nil {
		hs = w.hs()
	}
	w.conn = wrap(hc, tc, pre, hs)
	rwc := w.wrap(w.conn)
	return rwc, bufio.NewReadWriter(bufio.NewReaderSize(rwc, bufSize), bufio.NewWriterSize(rwc, bufSize)), nil
}

// streamOf finds the tracked connection beneath a hijacked one: an
// httphandoff.Server's (over TLS for wss, with the plaintext it had been
// given back), or one served from a handoff.Listener; no handoff.Conn if
// it has none.
func streamOf(nc net.Conn) (*handoff.Conn, *tlshandoff.Conn, []byte) {
	if hc := httphandoff.Conn(nc); hc != nil {
		return hc, nil, nil
	}
	if tc, unread := httphandoff.TLSConn(nc); tc != nil && tc.Handoff() != nil {
		return tc.Handoff(), tc, unread
	}
	hc, _ := nc.(*handoff.Conn)
	return hc, nil, nil
}

// resumeWriter is the http.ResponseWriter a library upgrades through
// again in the new process: nothing it writes reaches the client (the
// client had its 101 from the old process), and its Hijack returns the
// moved connection.
type resumeWriter struct {
	header http.Header
	status int
	conn   net.Conn
}

func (w *resumeWriter) Header() http.Header         { return w.header }
func (w *resumeWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *resumeWriter) WriteHeader(status int)      { w.status = status }

func (w *resumeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.conn, bufio.NewReadWriter(bufio.NewReaderSize(w.conn, bufSize), bufio.NewWriterSize(w.conn, bufSize)), nil
}

// resumeRequest is an opening handshake that asks for exactly what hs
// negotiated, for the library to accept again without a word on the wire.
func resumeRequest(hs Handshake) *http.Request {
	h := http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"AAAAAAAAAAAAAAAAAAAAAA=="}, // 16 bytes; the answer goes nowhere
	}
	if hs.Subprotocol != "" {
		h.Set("Sec-Websocket-Protocol", hs.Subprotocol)
	}
	if hs.Extensions != "" {
		h.Set("Sec-Websocket-Extensions", hs.Extensions)
	}
	return &http.Request{
		Method: http.MethodGet, URL: &url.URL{Path: "/"}, Proto: "HTTP/1.1",
		ProtoMajor: 1, ProtoMinor: 1, Header: h, Host: "wshandoff.invalid",
	}
}
