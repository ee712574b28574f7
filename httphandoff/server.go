package httphandoff

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// Server serves an unmodified http.Server on a handoff.Listener so that, at
// an upgrade, its keep-alive connections move to the new process instead
// of being closed. Make it before handoff.New (its Resume goes in the
// Options), then call Serve (or, for HTTPS, TLS before Ready and
// ServeTLS) once Ready has returned.
type Server struct {
	srv  *http.Server
	hook func(net.Conn, http.ConnState) // the application's ConnState, if any

	// observed, if set, hears what a connection does at an upgrade
	// ("waits": it cannot leave before its request is answered; "parks",
	// n: it left with n bytes of a request head). For tests.
	observed func(nc net.Conn, what string, n int)

	resumed chan *conn // connections to serve again: resumed, or back after a rollback
	closed  chan struct{}
	once    sync.Once

	tls *tlsServer // set by TLS

	// HTTP2Linger is how long this process goes on serving its HTTP/2
	// connections (which never move), new streams included, after it
	// stops accepting (the upgrade committed, or the application's
	// Shutdown or Drain), before it ends them with RFC 9113's graceful
	// GOAWAY. Zero, the default: at once. A connection its client closes
	// first ends sooner; Drain's context bounds it all. See doc.go for
	// the trade-off. Set it before ServeTLS.
	HTTP2Linger time.Duration
}

// New takes over srv's ConnState hook (the application's own, if set, is
// still called first). Serve srv only through Server.Serve or ServeTLS
// from then on.
func New(srv *http.Server) *Server {
	s := &Server{
		srv:     srv,
		hook:    srv.ConnState,
		resumed: make(chan *conn, 64),
		closed:  make(chan struct{}),
	}
	srv.ConnState = s.connState
	return s
}

// Resume is handoff.Options.Resume for the HTTP connections: a connection
// handed over from the old process is served as if just accepted, its
// unread bytes first, under the idle deadline it had there until its next
// request begins. An application that also parks hijacked connections
// dispatches on IsHTTP(state) first (see doc.go).
func (s *Server) Resume(c *handoff.Conn, state []byte) {
	if tlshandoff.IsState(state) {
		s.resumeTLS(c, state)
		return
	}
	s.serveAgain(newConn(s, c, c, true, decodeState(state)))
}

// Serve serves the http.Server on ln until ln is handed over or closed,
// and returns the error that ended accepting (wrapping handoff.ErrHandedOver
// after an upgrade); like http.Server.Serve, it never returns nil. Do not
// call the http.Server's Shutdown, Close or SetKeepAlivesEnabled(false)
// while an upgrade may hand connections over: they close idle keep-alive
// connections, which is what this package exists to avoid. After Exit is
// closed, nothing is left to close (over HTTPS, Drain ends what stayed).
//
// A Server serves one listener: Serve's or ServeTLS's.
func (s *Server) Serve(ln *handoff.Listener) error {
	return s.serve(ln, func(l *listener) {
		for {
			c, err := ln.AcceptConn()
			if err != nil {
				l.fail(err)
				return
			}
			l.deliver(newConn(s, c, c, false, time.Time{}).face)
		}
	})
}

// serve serves the http.Server on ln, whose connections accept hands
// to the listener's deliver.
func (s *Server) serve(ln net.Listener, accept func(*listener)) error {
	l := &listener{s: s, ln: ln, accepted: make(chan net.Conn), failed: make(chan error, 1)}
	go accept(l)
	err := s.srv.Serve(l)
	s.once.Do(func() { close(s.closed) })
	return err
}

// serveAgain queues c for the listener's next Accept.
func (s *Server) serveAgain(c *conn) {
	select {
	case s.resumed <- c:
	case <-s.closed:
		_ = c.stream.Close()
	}
}

// connState follows each connection through net/http's states: the
// moments at which one can leave are known only from them. It runs twice
// per request, so it finds the conn from nc itself, without a lock.
func (s *Server) connState(nc net.Conn, st http.ConnState) {
	if s.hook != nil {
		s.hook(nc, st)
	}
	c := connOf(nc)
	if c == nil {
		return
	}
	c.setState(st)
	switch {
	case st == http.StateClosed && c.isDetached():
		go c.park()
	case st == http.StateHijacked:
		// The application's now: the library asks it to park as any
		// handoff.Conn (Read returns handoff.ErrPark).
		c.hc.ParkWhen(nil)
	}
}

// Conn returns the handoff.Conn behind an HTTP connection this package
// served, such as one an http.Handler hijacked, so that the application
// can park it (Park, after Unread of what the hijack's bufio.Reader
// holds); nil for any other net.Conn, HTTPS ones included (see TLSConn).
func Conn(nc net.Conn) *handoff.Conn {
	if c, ok := nc.(*conn); ok {
		return c.hc
	}
	return nil
}

func (s *Server) observe(c *conn, what string, n int) {
	if s.observed != nil {
		s.observed(c, what, n)
	}
}

// connOf is the conn behind nc, if nc is one of this package's conns
// (not a TLS connection that stays here, served as is); nil otherwise.
func connOf(nc net.Conn) *conn {
	switch x := nc.(type) {
	case *conn:
		return x
	case *tlsConn:
		return x.conn
	}
	return nil
}

// listener merges the connections accepted (and, over TLS, past their
// handshake) with those to serve again.
type listener struct {
	s        *Server
	ln       net.Listener
	accepted chan net.Conn
	failed   chan error // the error that ended accepting
}

// deliver hands nc to net/http's next Accept, or closes it if the
// Server is done.
func (l *listener) deliver(nc net.Conn) {
	select {
	case l.accepted <- nc:
	case <-l.s.closed:
		_ = nc.Close()
	}
}

// fail ends accepting with err.
func (l *listener) fail(err error) { l.failed <- err }

func (l *listener) Accept() (net.Conn, error) {
	select {
	case nc := <-l.accepted:
		return nc, nil
	case err := <-l.failed:
		l.failed <- err // every later Accept fails too
		return nil, err
	case c := <-l.s.resumed:
		return c.face, nil
	case <-l.s.closed:
		return nil, net.ErrClosed
	}
}

// Close closes this process's copy of the listening socket, if the
// upgrade has not already (Drain's Shutdown comes after it).
func (l *listener) Close() error {
	l.s.once.Do(func() { close(l.s.closed) })
	if err := l.ln.Close(); !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func (l *listener) Addr() net.Addr { return l.ln.Addr() }

var errDetached = errors.New("httphandoff: connection detached for an upgrade")
