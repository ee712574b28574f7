package httphandoff

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// tlsServer is what Server.TLS sets up: the TLS layer, and HTTP/2 for
// the connections that negotiate it.
type tlsServer struct {
	ts     *tlshandoff.Server
	idle   time.Duration // HTTP/2 connections' IdleTimeout, as http2.ConfigureServer takes it
	linger time.Duration // Server.HTTP2Linger, as ServeTLS found it
	leave  sync.Once     // leaving: GOAWAY, now or after linger

	mu    sync.Mutex
	conns map[*h2Conn]struct{} // HTTP/2 connections
	going bool                 // GOAWAY sent: later connections get it at once
	empty chan struct{}        // closed when conns empties, if waited on
}

// TLS makes the Server serve HTTPS through ServeTLS: it returns the
// tlshandoff.Server made from cfg and opts (see tlshandoff.NewServer),
// whose ticket keys the application moves in its state
// (MarshalTicketKeys, SetTicketKeys). Call it after handoff.New (opts
// takes the Upgrader) and before Upgrader.Ready, which hands the
// connections resumed from the old process to Resume.
//
// cfg offers h2 and http/1.1 by ALPN unless its NextProtos say
// otherwise (cfg itself is not modified). HTTP/1.1 connections move as
// plain ones do, their TLS state with them. HTTP/2 connections never
// move (opts.Stay keeps them here): once this process stops accepting
// (the listener is handed over, or closed), at once or once
// Server.HTTP2Linger has passed, they get RFC 9113's graceful GOAWAY
// (two of them, a round trip apart: no stream the client sent is
// refused), finish the streams in flight and close; Drain waits for
// them.
func (s *Server) TLS(cfg *tls.Config, opts tlshandoff.Options) (*tlshandoff.Server, error) {
	if cfg == nil {
		return nil, errors.New("httphandoff: nil tls.Config")
	}
	cfg = cfg.Clone()
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{http2.NextProtoTLS, "http/1.1"}
	}
	stay := opts.Stay
	opts.Stay = func(cs tls.ConnectionState) bool {
		return cs.NegotiatedProtocol == http2.NextProtoTLS || (stay != nil && stay(cs))
	}
	ts, err := tlshandoff.NewServer(cfg, opts)
	if err != nil {
		return nil, err
	}
	t := &tlsServer{ts: ts, conns: map[*h2Conn]struct{}{}}
	s.srv.RegisterOnShutdown(t.stopping) // the application's Shutdown ends HTTP/2 connections too
	s.tls = t
	return ts, nil
}

// ServeTLS serves HTTPS on ln, a listener from Upgrader.ListenPlain
// (the TLS layer tracks each connection that can move once its
// handshake is over), with the tlshandoff.Server that TLS made. It
// returns as Serve does. Handlers see r.TLS, also after a move (with the
// fields tlshandoff.Conn.ConnectionState keeps). HTTP/1.1 connections
// move as plain ones do; HTTP/2 ones stay and end with GOAWAY, as do
// connections whose TLS cannot move (tlshandoff.Conn.Movable): after
// Exit is closed, Drain ends what stayed.
func (s *Server) ServeTLS(ln net.Listener) error {
	t := s.tls
	if t == nil {
		return errors.New("httphandoff: ServeTLS without TLS")
	}
	t.idle = s.srv.IdleTimeout // as http2.ConfigureServer takes it
	if t.idle == 0 {
		t.idle = s.srv.ReadTimeout
	}
	t.linger = s.HTTP2Linger
	return s.serve(ln, func(l *listener) {
		for {
			raw, err := ln.Accept()
			if err != nil {
				// No more connections here: HTTP/2 ones end the way
				// HTTP/2 means (after HTTP2Linger), and their clients
				// open new ones to whoever accepts now.
				t.stopping()
				l.fail(err)
				return
			}
			go s.handshake(l, t.ts.Server(raw))
		}
	})
}

// handshake runs tc's handshake, as net/http runs a *tls.Conn's, and
// hands the connection on by its protocol and whether it can move.
func (s *Server) handshake(l *listener, tc *tlshandoff.Conn) {
	if d := handshakeTimeout(s.srv); d > 0 {
		_ = tc.SetDeadline(time.Now().Add(d))
	}
	if err := tc.Handshake(); err != nil {
		s.logf("http: TLS handshake error from %s: %v", tc.RemoteAddr(), err)
		_ = tc.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	switch hc := tc.Handoff(); {
	case tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS:
		s.serveH2(tc)
	case hc != nil:
		l.deliver(newConn(s, &tlsStream{Conn: tc}, hc, false, time.Time{}).face)
	default:
		l.deliver(tc) // served here to its end; Drain closes it once idle
	}
}

// handshakeTimeout is net/http's bound on a TLS handshake: the least of
// the http.Server's positive read and write timeouts.
func handshakeTimeout(srv *http.Server) time.Duration {
	ds := slices.DeleteFunc([]time.Duration{srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout},
		func(d time.Duration) bool { return d <= 0 })
	if len(ds) == 0 {
		return 0
	}
	return slices.Min(ds)
}

func (s *Server) logf(format string, args ...any) {
	if s.srv.ErrorLog != nil {
		s.srv.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// serveH2 serves an HTTP/2 connection with the http.Server's settings
// and handler until it ends. Each connection has its own http2.Server:
// x/net's graceful shutdown (http2.ConfigureServer's hook on an
// http.Server's Shutdown) is per server, and each connection starts its
// own once its client has answered the first GOAWAY's PING.
func (s *Server) serveH2(tc *tlshandoff.Conn) {
	t := s.tls
	h2, hs := &http2.Server{IdleTimeout: t.idle}, &http.Server{}
	if err := http2.ConfigureServer(hs, h2); err != nil { // a fresh http.Server: never fails
		s.logf("httphandoff: http2: %v", err)
		_ = tc.Close()
		return
	}
	c := &h2TLSConn{h2Conn: newH2Conn(tc, func() { _ = hs.Shutdown(context.Background()) }), tc: tc}
	t.add(c.h2Conn)
	defer t.remove(c.h2Conn)
	defer c.Close()
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.srv)
	if s.srv.ConnContext != nil {
		ctx = s.srv.ConnContext(ctx, c)
	}
	h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, BaseConfig: s.srv})
}

// h2TLSConn is an HTTP/2 connection as x/net serves it: it takes the TLS
// parameters (for its checks, and r.TLS) from ConnectionState.
type h2TLSConn struct {
	*h2Conn
	tc *tlshandoff.Conn
}

// ConnectionState returns the connection's TLS parameters.
func (c *h2TLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// add tracks c; once this process is going, c gets GOAWAY at once.
func (t *tlsServer) add(c *h2Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.conns[c] = struct{}{}
	if t.going {
		c.goAway()
	}
}

func (t *tlsServer) remove(c *h2Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	if len(t.conns) == 0 && t.empty != nil {
		close(t.empty)
		t.empty = nil
	}
}

// stopping is called when this process stops accepting (and at
// Drain): HTTP/2 connections get GOAWAY, at once or after the linger.
func (t *tlsServer) stopping() {
	t.leave.Do(func() {
		if t.linger <= 0 {
			t.goAway()
			return
		}
		time.AfterFunc(t.linger, t.goAway)
	})
}

// goAway starts RFC 9113's graceful shutdown on every HTTP/2 connection,
// now and from now on: the streams in flight finish, the client opens
// no more, and the connection closes once they are done.
func (t *tlsServer) goAway() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.going = true
	for c := range t.conns {
		c.goAway()
	}
}

// wait waits until no HTTP/2 connection is open, or ctx ends; then it
// closes those still open.
func (t *tlsServer) wait(ctx context.Context) error {
	t.mu.Lock()
	if len(t.conns) == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.empty == nil {
		t.empty = make(chan struct{})
	}
	empty := t.empty
	t.mu.Unlock()
	select {
	case <-empty:
		return nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	n := len(t.conns)
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	return fmt.Errorf("httphandoff: drain: closed %d HTTP/2 connections: %w", n, ctx.Err())
}

// Drain ends what stayed in this process, once Exit is closed (every
// connection that could move has moved): HTTP/2 connections get GOAWAY
// (if they have not yet; with HTTP2Linger, once it has passed) and
// finish their streams, and HTTP/1.1 ones
// (those whose TLS cannot move, and any accepted after the commit) are
// closed once idle, through the http.Server's Shutdown. It returns nil
// once all are closed; at ctx's end it closes what is left and returns
// an error wrapping ctx.Err(). Before Exit, it would close connections
// that are to move: call it only after.
func (s *Server) Drain(ctx context.Context) error {
	if s.tls != nil {
		s.tls.stopping()
	}
	err := s.srv.Shutdown(ctx)
	if s.tls != nil {
		err = errors.Join(err, s.tls.wait(ctx))
	}
	if err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("httphandoff: drain: %w", err)
	}
	return nil
}

// resumeTLS serves again an HTTPS connection handed over with its TLS
// state, whose application part is httphandoff's state and the bytes of
// a request head to read first.
func (s *Server) resumeTLS(hc *handoff.Conn, state []byte) {
	if s.tls == nil {
		s.logf("httphandoff: an HTTPS connection resumed before Server.TLS was called; closing it")
		_ = hc.Close()
		return
	}
	tc, app, err := s.tls.ts.Resume(hc, state)
	if err != nil || len(app) < stateLen || !IsHTTP(app[:stateLen]) {
		s.logf("httphandoff: cannot resume an HTTPS connection from %s: %v", hc.RemoteAddr(), err)
		_ = hc.Close()
		return
	}
	st := &tlsStream{Conn: tc, unread: app[stateLen:]}
	s.serveAgain(newConn(s, st, hc, true, decodeState(app[:stateLen])))
}

// tlsStream is an HTTPS connection's stream: TLS over the tracked
// handoff.Conn. The bytes of a head given back stay here, above the TLS
// layer, and travel after httphandoff's state in the application part
// of the TLS state.
type tlsStream struct {
	*tlshandoff.Conn
	mu     sync.Mutex
	unread []byte
}

func (t *tlsStream) Read(p []byte) (int, error) {
	t.mu.Lock()
	if len(t.unread) > 0 {
		n := copy(p, t.unread)
		t.unread = t.unread[n:]
		t.mu.Unlock()
		return n, nil
	}
	t.mu.Unlock()
	return t.Conn.Read(p)
}

func (t *tlsStream) Unread(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unread = append(append([]byte(nil), p...), t.unread...)
}

// Park parks the TLS connection with state and the bytes given back.
// They stay here too: after a rollback they are read again.
func (t *tlsStream) Park(state []byte) error {
	t.mu.Lock()
	app := append(append([]byte(nil), state...), t.unread...)
	t.mu.Unlock()
	return t.Conn.Park(app)
}

// tlsConn is an HTTPS conn as net/http serves it: net/http sets r.TLS
// from any connection that has a ConnectionState.
type tlsConn struct {
	*conn
	tc *tlshandoff.Conn
}

// ConnectionState returns the connection's TLS parameters.
func (c *tlsConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }
