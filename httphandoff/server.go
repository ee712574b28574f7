package httphandoff

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/handoff"
)

// Server serves an unmodified http.Server on a handoff.Listener so that, at
// an upgrade, its keep-alive connections move to the new process instead
// of being closed. Make it before handoff.New (its Resume goes in the
// Options), then call Serve once Ready has returned.
type Server struct {
	srv  *http.Server
	hook func(net.Conn, http.ConnState) // the application's ConnState, if any

	// observed, if set, hears what a connection does at an upgrade
	// ("waits": it cannot leave before its request is answered; "parks",
	// n: it left with n bytes of a request head). For tests.
	observed func(nc net.Conn, what string, n int)

	mu      sync.Mutex
	conns   map[net.Conn]*conn
	resumed chan *conn // connections to serve again: resumed, or back after a rollback
	closed  chan struct{}
	once    sync.Once
}

// New takes over srv's ConnState hook (the application's own, if set, is
// still called first). Serve srv only through Server.Serve from then on.
func New(srv *http.Server) *Server {
	s := &Server{
		srv:     srv,
		hook:    srv.ConnState,
		conns:   make(map[net.Conn]*conn),
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
	s.serveAgain(newConn(s, c, true, decodeState(state)))
}

// Serve serves the http.Server on ln until ln is handed over or closed,
// and returns the error that ended accepting (wrapping handoff.ErrHandedOver
// after an upgrade); like http.Server.Serve, it never returns nil. Do not
// call the http.Server's Shutdown, Close or SetKeepAlivesEnabled(false)
// while an upgrade may hand connections over: they close idle keep-alive
// connections, which is what this package exists to avoid. After Exit is
// closed, nothing is left to close.
func (s *Server) Serve(ln *handoff.Listener) error {
	l := &listener{s: s, ln: ln, accepted: make(chan acceptResult)}
	go l.acceptLoop()
	err := s.srv.Serve(l)
	s.once.Do(func() { close(s.closed) })
	return err
}

// serveAgain queues c for the listener's next Accept.
func (s *Server) serveAgain(c *conn) {
	select {
	case s.resumed <- c:
	case <-s.closed:
		_ = c.Conn.Close()
	}
}

// connState follows each connection through net/http's states: the
// moments at which one can leave are known only from them.
func (s *Server) connState(nc net.Conn, st http.ConnState) {
	if s.hook != nil {
		s.hook(nc, st)
	}
	s.mu.Lock()
	c := s.conns[nc]
	if st == http.StateClosed || st == http.StateHijacked {
		delete(s.conns, nc)
	}
	s.mu.Unlock()
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
		c.Conn.ParkWhen(nil)
	}
}

// Conn returns the handoff.Conn behind a connection this package served,
// such as one an http.Handler hijacked, so that the application can park
// it (Park, after Unread of what the hijack's bufio.Reader holds); nil for
// any other net.Conn.
func Conn(nc net.Conn) *handoff.Conn {
	if c, ok := nc.(*conn); ok {
		return c.Conn
	}
	return nil
}

func (s *Server) observe(c *conn, what string, n int) {
	if s.observed != nil {
		s.observed(c, what, n)
	}
}

func (s *Server) track(c *conn) {
	s.mu.Lock()
	s.conns[c] = c
	s.mu.Unlock()
}

type acceptResult struct {
	c   *handoff.Conn
	err error
}

// listener merges the handoff listener's connections with those to serve
// again.
type listener struct {
	s        *Server
	ln       *handoff.Listener
	accepted chan acceptResult
}

func (l *listener) acceptLoop() {
	for {
		c, err := l.ln.AcceptConn()
		select {
		case l.accepted <- acceptResult{c, err}:
		case <-l.s.closed:
			if c != nil {
				_ = c.Close()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case r := <-l.accepted:
		if r.err != nil {
			return nil, r.err
		}
		c := newConn(l.s, r.c, false, time.Time{})
		l.s.track(c)
		return c, nil
	case c := <-l.s.resumed:
		l.s.track(c)
		return c, nil
	case <-l.s.closed:
		return nil, net.ErrClosed
	}
}

// Close closes this process's copy of the listening socket.
func (l *listener) Close() error {
	l.s.once.Do(func() { close(l.s.closed) })
	return l.ln.Close()
}

func (l *listener) Addr() net.Addr { return l.ln.Addr() }

var errDetached = errors.New("httphandoff: connection detached for an upgrade")
