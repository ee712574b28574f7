package handoff

import (
	"fmt"
	"net"
	"time"
)

// Listener is a listening socket that stops accepting while an upgrade is in
// progress, so that every connection is either handed over or accepted by
// the new process; the kernel queues connections meanwhile (none is refused
// while the backlog holds). Accept returns *Conn values.
//
// Ownership: the listening socket is shared with later processes through
// tableflip. Closing the Listener closes this process's copy only.
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
		return c, nil
	}
}

type deadliner interface{ SetDeadline(time.Time) error }

// setDeadline wakes (or stops waking) a blocked Accept.
func (l *Listener) setDeadline(t time.Time) {
	if d, ok := l.Listener.(deadliner); ok {
		_ = d.SetDeadline(t)
	}
}

// listenerList returns the listeners made through Listen and not yet
// handed over.
func (r *registry) listenerList() []*Listener {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Listener(nil), r.listeners...)
}

// keepSocketFiles stops the listeners from removing their Unix socket
// files on close: the new process serves on them.
func keepSocketFiles(lns []*Listener) {
	for _, l := range lns {
		if ul, ok := l.Listener.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
	}
}
