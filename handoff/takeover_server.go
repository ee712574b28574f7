//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// maxTakeoverConns bounds the peers being admitted at once; one at a time
// takes over (ErrUpgradeInProgress), the others are told BUSY.
const maxTakeoverConns = 8

// takeoverServer lets peers in through the takeover socket: each is
// checked (uid, TAKEOVER, token) before it may ask for an upgrade, which
// then runs as any other does (UpgradeWith), the peer's connection as its
// channel. A peer refused for good gets ABORT; one that came at the wrong
// time (not ready, an upgrade in progress, handed over) gets BUSY and
// asks again.
type takeoverServer struct {
	u         upgradeAsker
	log       *slog.Logger
	ln        net.Listener
	tokenFile string
	slots     chan struct{}
	start     chan struct{} // closed by startAccepting
	quit      chan struct{} // closed by stopAccepting
	once      sync.Once
}

// upgradeAsker is the Upgrader, as the takeover server asks it.
type upgradeAsker interface {
	UpgradeWith(ctx context.Context, req UpgradeRequest) (UpgradeResult, error)
}

// serveTakeover serves ln from startAccepting until stopAccepting.
func serveTakeover(u upgradeAsker, log *slog.Logger, ln net.Listener, tokenFile string) *takeoverServer {
	s := &takeoverServer{u: u, log: log, ln: ln, tokenFile: tokenFile, slots: make(chan struct{}, maxTakeoverConns),
		start: make(chan struct{}), quit: make(chan struct{})}
	go s.serve()
	return s
}

// startAccepting lets the server accept.
func (s *takeoverServer) startAccepting() { closeOnce(s.start) }

func (s *takeoverServer) serve() {
	select {
	case <-s.start:
	case <-s.quit:
		return
	}
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		select {
		case s.slots <- struct{}{}:
			go func() {
				defer func() { <-s.slots }()
				s.admit(c.(*net.UnixConn))
			}()
		default:
			refuse(wire.NewChannel(c.(*net.UnixConn)), wire.Busy{Reason: "too many peers at once"})
		}
	}
}

// stopAccepting stops serving; the socket file stays for whoever serves it next
// (this process's successor has a copy of the listener).
func (s *takeoverServer) stopAccepting() {
	s.once.Do(func() {
		close(s.quit)
		keepSocketFile(s.ln)
		_ = s.ln.Close()
	})
}

// admit checks a peer and, if it may, lets it take over.
func (s *takeoverServer) admit(c *net.UnixConn) {
	ch := wire.NewChannel(c)
	ch.SetDeadline(time.Now().Add(greetTimeout))
	pid, err := s.check(ch)
	if errors.Is(err, io.EOF) {
		s.log.Debug("handoff: a peer connected and left", "peer", pid) // a probe of the socket, say
		ch.Close()
		return
	}
	if err != nil {
		s.log.Warn("handoff: takeover refused", "peer", pid, "err", err)
		refuse(ch, wire.Abort{Reason: err.Error()})
		return
	}
	ch.SetDeadline(time.Time{}) // the upgrade sets its own
	res, err := s.u.UpgradeWith(context.Background(), UpgradeRequest{peer: &peerConn{conn: c, pid: pid}})
	if err != nil && res.Cause == CauseRefused {
		refuse(ch, wire.Busy{Reason: err.Error()}) // the upgrade never took the channel
	}
}

// check admits a peer of this process's uid that says TAKEOVER with the
// token; it returns the peer's pid as the kernel says it.
func (s *takeoverServer) check(ch *wire.Channel) (pid int, err error) {
	cred, err := wire.PeerCred(ch.Conn())
	if err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	if int(cred.Uid) != os.Getuid() {
		return int(cred.Pid), fmt.Errorf("the peer runs as uid %d, this process as uid %d", cred.Uid, os.Getuid())
	}
	var t wire.Takeover
	if err := ch.Expect(&t); err != nil {
		return int(cred.Pid), fmt.Errorf("waiting for TAKEOVER: %w", err)
	}
	if t.Version != protocolVersion {
		return int(cred.Pid), fmt.Errorf("the peer speaks protocol version %d, this process %d", t.Version, protocolVersion)
	}
	want, err := readToken(s.tokenFile)
	if err != nil {
		return int(cred.Pid), err
	}
	if !wire.TokenMatches(t.Token, want) {
		return int(cred.Pid), errors.New("the peer's takeover token is not this process's")
	}
	return int(cred.Pid), nil
}

// refuse sends f, ABORT or BUSY, and closes the connection once the peer
// has read it: what the peer sent meanwhile (its HELLO) is read and
// dropped first, since a close with unread data resets the connection and
// the peer would get ECONNRESET instead of the answer.
func refuse(ch *wire.Channel, f wire.Encoder) {
	defer ch.Close()
	ch.SetDeadline(time.Now().Add(time.Second))
	if ch.Send(f, nil) != nil || ch.Conn().CloseWrite() != nil {
		return
	}
	ch.Drain()
}
