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

// passed is a listening socket a new process inherits, by name.
type passed struct {
	ln  net.Listener
	key string
}

// passedListeners returns every listener the next process inherits: those
// of Listen and of ListenPlain.
func (u *Upgrader) passedListeners() []passed {
	var out []passed
	for _, l := range u.reg.listenerList() {
		out = append(out, passed{l.Listener, listenerKey(l.network, l.addr)})
	}
	u.plainMu.Lock()
	defer u.plainMu.Unlock()
	return append(out, u.plain...)
}

// ListenPlain returns a listener inherited across upgrades as Listen's
// are, whose connections are the application's alone: never tracked,
// parked or handed over. It suits an HTTP endpoint (metrics, health
// checks) or a control socket, whose open connections end with the
// process while the listening socket goes on. After this process hands
// over, its copy is closed; the new process has its own.
func (u *Upgrader) ListenPlain(network, addr string) (net.Listener, error) {
	ln, _, err := u.listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s %s: %w", network, addr, err)
	}
	u.plainMu.Lock()
	u.plain = append(u.plain, passed{ln, listenerKey(network, addr)})
	u.plainMu.Unlock()
	return ln, nil
}

// releasePlain closes this process's copies of the plain listeners, at a
// handover: the new process serves them.
func (u *Upgrader) releasePlain() {
	u.plainMu.Lock()
	plain := u.plain
	u.plain = nil
	u.plainMu.Unlock()
	for _, p := range plain {
		keepSocketFile(p.ln)
		_ = p.ln.Close()
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
