package tlshandoff

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/handoff-dev/handoff/handoff"
)

// Options configure a Server. Zero values mean the documented default.
type Options struct {
	// Upgrader, if set, tracks every connection that can move once its
	// handshake is over (handoff.Upgrader.Wrap, under Kind), so that an
	// upgrade parks and moves it. Connections that cannot move stay
	// untracked: the application drains them (Server.Drain). Accept
	// connections for such a Server from Upgrader.ListenPlain, not
	// Upgrader.Listen, which would track them before the handshake.
	// Default: none; connections move only through MarshalState and
	// Resume.
	Upgrader *handoff.Upgrader
	// Kind is the kind moved connections are tracked under. Default "tls".
	Kind string
	// Logger receives a line for each connection that cannot move, and,
	// with an Upgrader, one at each upgrade: how many connections move
	// and how many stay here to drain.
	// Default slog.Default().
	Logger *slog.Logger
	// Stay, if set, is asked about each connection that could move, once
	// its handshake is over: one it returns true for stays in this
	// process, served by crypto/tls to its end as one that cannot move
	// (Movable says why; Drain waits for it), without a log line, since
	// the application chose it. Package httphandoff keeps HTTP/2 (ALPN
	// h2) connections here: HTTP/2 is never idle between requests, and
	// drains with GOAWAY instead. Default: every connection that can
	// move, moves.
	Stay func(tls.ConnectionState) bool
}

// Server makes server-side Conns from a tls.Config.
type Server struct {
	user *tls.Config // the application's
	cfg  *tls.Config // what crypto/tls gets: user's clone with our hook
	opts Options

	tickets ticketKeys

	handshakes atomic.Uint64
	movable    atomic.Uint64
	unmovable  atomic.Uint64
	mu         sync.Mutex
	open       int           // open connections that cannot move
	drained    chan struct{} // closed when open falls to 0; nil if never waited on
}

// NewServer returns a Server for cfg, which must have a certificate (as
// tls.Server's). cfg is not modified; later changes to it are not seen.
// Every feature of tls.Config works as with crypto/tls, with these
// differences: GetConfigForClient's ClientHelloInfo.Conn is not the
// accepted net.Conn but a wrapper of it, and session tickets are
// encrypted with the Server's keys (see SetTicketKeys), through
// WrapSession and UnwrapSession, and carry a TLS 1.2 session's master
// secret for its resumptions to move. An application that sets
// WrapSession or UnwrapSession keeps them, and its resumed TLS 1.2
// sessions cannot move.
func NewServer(cfg *tls.Config, opts Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("tlshandoff: nil tls.Config")
	}
	if opts.Kind == "" {
		opts.Kind = "tls"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{user: cfg, cfg: cfg.Clone(), opts: opts}
	s.cfg.GetConfigForClient = s.configForClient
	if err := s.tickets.init(s.cfg); err != nil {
		return nil, err
	}
	if opts.Upgrader != nil {
		s.reportUpgrades(opts.Upgrader)
	}
	return s, nil
}

// Server returns a Conn for a connection accepted from a client, as
// tls.Server does; the handshake runs at its first Read, Write or
// Handshake. The Conn owns raw.
func (s *Server) Server(raw net.Conn) *Conn {
	hs := newHSConn(raw)
	return &Conn{srv: s, hs: hs, tc: tls.Server(hs, s.cfg)}
}

// configForClient gives each handshake a tls.Config of its own whose
// KeyLogWriter is its connection's: the only way crypto/tls says a
// connection's traffic secrets.
func (s *Server) configForClient(chi *tls.ClientHelloInfo) (*tls.Config, error) {
	base := s.user
	if s.user.GetConfigForClient != nil {
		c, err := s.user.GetConfigForClient(chi)
		if err != nil {
			return nil, err
		}
		if c != nil {
			base = c
		}
	}
	h, ok := chi.Conn.(*hsConn)
	if !ok {
		return base, nil
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = nil
	cfg.KeyLogWriter = keyLog{h: h, user: base.KeyLogWriter}
	if base.WrapSession == nil && base.UnwrapSession == nil {
		cfg.WrapSession, cfg.UnwrapSession = s.wrapSession(h), s.unwrapSession(h)
	}
	return cfg, nil
}

// extraMaster marks the SessionState.Extra entry that holds a TLS 1.2
// session's master secret. crypto/tls logs no master secret when it
// resumes a TLS 1.2 session, so the ticket carries it for the record
// layer; the ticket holds that secret anyway, encrypted.
const extraMaster = "tlshandoff master\x00"

// wrapSession encrypts a ticket with the Server's keys, adding a TLS 1.2
// session's master secret.
func (s *Server) wrapSession(h *hsConn) func(tls.ConnectionState, *tls.SessionState) ([]byte, error) {
	return func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = slices.DeleteFunc(ss.Extra, func(e []byte) bool { return bytes.HasPrefix(e, []byte(extraMaster)) })
		if m := h.master(); cs.Version == tls.VersionTLS12 && m != nil {
			ss.Extra = append(ss.Extra, append([]byte(extraMaster), m...))
		}
		return s.cfg.EncryptTicket(cs, ss)
	}
}

// unwrapSession decrypts a ticket with the Server's keys and keeps the
// master secret of a TLS 1.2 session it resumes.
func (s *Server) unwrapSession(h *hsConn) func([]byte, tls.ConnectionState) (*tls.SessionState, error) {
	return func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := s.cfg.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			return ss, err
		}
		for _, e := range ss.Extra {
			if m, ok := bytes.CutPrefix(e, []byte(extraMaster)); ok {
				h.setResumedMaster(m)
			}
		}
		return ss, nil
	}
}

// track hands a movable connection's transport to the Upgrader.
func (s *Server) track(raw net.Conn) net.Conn {
	if s.opts.Upgrader == nil {
		return raw
	}
	return s.opts.Upgrader.Wrap(raw, s.opts.Kind)
}

func (s *Server) moving() {
	s.handshakes.Add(1)
	s.movable.Add(1)
}

// cannotMove counts, and says, a connection that stays with crypto/tls.
func (s *Server) cannotMove(c *Conn) {
	s.handshakes.Add(1)
	s.unmovable.Add(1)
	s.mu.Lock()
	s.open++
	c.unmoving = true
	s.mu.Unlock()
	if c.why == whyStay {
		return
	}
	s.opts.Logger.Info("tlshandoff: connection cannot move; crypto/tls serves it here and it drains at an upgrade",
		"remote", c.hs.RemoteAddr().String(), "reason", c.why)
}

// whyStay is Movable's reason for a connection Options.Stay kept here.
const whyStay = "the application keeps it in this process (Options.Stay)"

// closedUnmoving is called as a connection served by crypto/tls closes.
func (s *Server) closedUnmoving(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.unmoving {
		return
	}
	c.unmoving = false
	if s.open--; s.open == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// Stats counts a Server's handshakes since it started.
type Stats struct {
	Handshakes    uint64 // completed
	Movable       uint64 // of which the record layer is this package's
	Unmovable     uint64 // of which crypto/tls serves (see Conn.Movable)
	OpenUnmovable int    // connections served by crypto/tls not yet closed
}

// Stats returns the Server's counters: at an upgrade, OpenUnmovable is
// the number of connections that drain here rather than move.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	open := s.open
	s.mu.Unlock()
	return Stats{Handshakes: s.handshakes.Load(), Movable: s.movable.Load(), Unmovable: s.unmovable.Load(), OpenUnmovable: open}
}

// Drain waits until every connection that cannot move has been closed,
// or ctx ends (an error wrapping ctx.Err() that says how many are open).
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.open == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	ch := s.drained
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tlshandoff: drain: %d connections still open: %w", s.Stats().OpenUnmovable, ctx.Err())
	}
}

// NewListener returns a listener whose Accept returns the Server's Conns
// for inner's connections. Closing it closes inner.
func (s *Server) NewListener(inner net.Listener) net.Listener {
	return &listener{Listener: inner, s: s}
}

type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.s.Server(raw), nil
}
