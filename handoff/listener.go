package handoff

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Listener is a listening socket that stops accepting while an upgrade is in
// progress, so that every connection is either handed over or accepted by
// the new process; the kernel queues connections meanwhile (none is refused
// while the backlog holds). Accept returns *Conn values.
//
// Ownership: the listening socket is passed to later processes at every
// upgrade. Closing the Listener closes this process's copy only.
type Listener struct {
	net.Listener
	reg     *registry
	kind    string
	network string // as given to Listen: the name the new process asks for it by
	addr    string
}

var _ net.Listener = (*Listener)(nil)

// Accept waits for the next connection and returns it as a *Conn.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptConn()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptConn waits for the next connection. After this process has handed
// over, it returns an error wrapping ErrHandedOver and net.ErrClosed.
func (l *Listener) AcceptConn() (*Conn, error) {
	for {
		if err := l.reg.enterAccept(); err != nil {
			return nil, fmt.Errorf("handoff: accept: %w (%w)", err, net.ErrClosed)
		}
		nc, err := l.Listener.Accept()
		c, retry := l.reg.leaveAccept(nc, err, l.kind)
		if retry {
			continue
		}
		if err != nil {
			return nil, err
		}
		if c.reg != nil {
			l.reg.keep(nc, c.kind, false)
		}
		return c, nil
	}
}

// Close closes this process's copy of the listening socket: the process it
// was handed to has its own. Closed by the application in a process that
// serves, it is first taken back from the supervisor, if it kept it.
func (l *Listener) Close() error {
	if !l.reg.listenersGone() {
		l.reg.release(l.Listener, listenerKey(l.network, l.addr), true)
	}
	return l.Listener.Close()
}

type deadliner interface{ SetDeadline(time.Time) error }

// setDeadline wakes (or stops waking) a blocked Accept.
func (l *Listener) setDeadline(t time.Time) {
	if d, ok := l.Listener.(deadliner); ok {
		_ = d.SetDeadline(t)
	}
}

// handedListener is a listening socket a new process inherits, by name.
type handedListener struct {
	ln  net.Listener
	key string
}

// plainListeners are ListenPlain's listeners: passed on at every upgrade,
// closed here at a handover.
type plainListeners struct {
	mu     sync.Mutex
	handed []handedListener
}

func (p *plainListeners) add(l handedListener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.handed = append(p.handed, l)
}

func (p *plainListeners) list() []handedListener {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]handedListener(nil), p.handed...)
}

// release closes this process's copies of the plain listeners, at a
// handover: the new process serves them. The one of key stay, if any,
// stays open and listed.
func (p *plainListeners) release(stay string) {
	p.mu.Lock()
	var gone, kept []handedListener
	for _, l := range p.handed {
		if l.key == stay {
			kept = append(kept, l)
		} else {
			gone = append(gone, l)
		}
	}
	p.handed = kept
	p.mu.Unlock()
	for _, l := range gone {
		keepSocketFile(l.ln)
		_ = l.ln.Close()
	}
}

// ownSocketFiles makes this process, which has taken over, the owner of
// its Unix sockets' files: its last close removes them.
func ownSocketFiles(ps []handedListener) {
	for _, p := range ps {
		if ul, ok := p.ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(true)
		}
	}
}

// keepSocketFiles stops the listeners from removing their Unix socket
// files on close: the new process serves on them.
func keepSocketFiles(lns []*Listener) {
	for _, l := range lns {
		keepSocketFile(l.Listener)
	}
}

func keepSocketFile(ln net.Listener) {
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
}

// closeOnce closes c if it is still open: for a channel that one
// goroutine at a time closes (a server's start, under its owner's calls).
func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// acceptor is a server of a socket of the library's own that accepts
// once the process may act on what comes in (the takeover socket's).
type acceptor interface {
	startAccepting()
	stopAccepting()
}
