package handoff

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// registry knows every live Conn and Listener of the process, and drives them
// through park, resume and handover.
type registry struct {
	maxBuffered int

	mu        sync.Mutex
	conns     map[uint64]*Conn
	nextID    uint64
	listeners []*Listener
	paused    bool          // listeners must not accept
	resumed   chan struct{} // closed when paused ends
	gone      bool          // handed over: listeners are closed for good
	inAccept  int           // goroutines inside an underlying Accept
	parking   bool          // new connections are asked to park at once
	changed   chan struct{} // a park-relevant count changed
	parkedN   atomic.Int64  // handlers parked since parkAll began: tells when a full scan may succeed
}

// parkedConn is a connection ready to travel: its handler is blocked in Park.
type parkedConn struct {
	c      *Conn
	unread []byte
	state  []byte
}

func newRegistry(maxBuffered int) *registry {
	return &registry{
		maxBuffered: maxBuffered,
		conns:       make(map[uint64]*Conn),
		resumed:     make(chan struct{}),
		changed:     make(chan struct{}, 1),
	}
}

// track registers nc, taking ownership of it. A connection that arrives while
// the process is parking is asked to park at once.
func (r *registry) track(nc net.Conn, kind string, unread []byte) *Conn {
	r.mu.Lock()
	c := r.trackLocked(nc, kind, unread)
	r.mu.Unlock()
	r.notify()
	return c
}

// trackLocked registers nc. While parking, the connection is published
// already asked to park, so that parkAll cannot finish without it.
func (r *registry) trackLocked(nc net.Conn, kind string, unread []byte) *Conn {
	c := &Conn{Conn: nc, kind: kind, max: r.maxBuffered, reg: r, buf: unread}
	r.nextID++
	c.id = r.nextID
	if r.parking {
		c.ask()
	}
	r.conns[c.id] = c
	return c
}

func (r *registry) remove(c *Conn) {
	r.mu.Lock()
	delete(r.conns, c.id)
	r.mu.Unlock()
	r.notify()
}

// parkedOne is called by a Conn whose handler has just parked.
func (r *registry) parkedOne(c *Conn, unread []byte) {
	c.mu.Lock()
	c.unreadAtPark = unread
	c.mu.Unlock()
	r.parkedN.Add(1)
	r.notify()
}

func (r *registry) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// parkAll stops the listeners, asks every connection to park and waits until
// all have, or until ctx ends. On error the caller must call resumeAll.
func (r *registry) parkAll(ctx context.Context) ([]parkedConn, error) {
	r.mu.Lock()
	r.parking = true
	r.parkedN.Store(0)
	r.pauseLocked()
	conns := r.snapshotLocked()
	r.mu.Unlock()
	for _, c := range conns {
		c.ask()
	}
	// A full scan locks every connection: with 10k of them, one after
	// each parked handler made parking quadratic. Scan when the count
	// says every connection may have parked, and every 50 ms regardless.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for scan := true; ; scan = r.mayAllBeParked() {
		if scan {
			if ready, waiting := r.parkedLocked(); waiting == 0 {
				return ready, nil
			}
		}
		select {
		case <-r.changed:
		case <-tick.C:
			if ready, waiting := r.parkedLocked(); waiting == 0 {
				return ready, nil
			}
		case <-ctx.Done():
			_, waiting := r.parkedLocked()
			return nil, fmt.Errorf("%d connections did not reach a message boundary: %w", waiting, ctx.Err())
		}
	}
}

// mayAllBeParked reports whether as many handlers have parked as there are
// connections, with no accept in flight.
func (r *registry) mayAllBeParked() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inAccept == 0 && r.parkedN.Load() >= int64(len(r.conns))
}

// parkedLocked lists the parked connections and counts those (and the
// accepts in flight) still to come. It takes r.mu itself.
func (r *registry) parkedLocked() ([]parkedConn, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	waiting := r.inAccept
	var ready []parkedConn
	for _, c := range r.conns {
		c.mu.Lock()
		switch {
		case c.state == parked:
			ready = append(ready, parkedConn{c: c, unread: c.unreadAtPark, state: c.saved})
		case c.state == parkAsked && !c.closed:
			waiting++
		}
		c.mu.Unlock()
	}
	return ready, waiting
}

// live returns every connection not closed, for the early fds.
func (r *registry) live() []*Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snapshotLocked()
}

func (r *registry) snapshotLocked() []*Conn {
	conns := make([]*Conn, 0, len(r.conns))
	for _, c := range r.conns {
		conns = append(conns, c)
	}
	return conns
}

// resumeAll ends a failed upgrade: every connection carries on where it
// stopped and the listeners accept again.
func (r *registry) resumeAll() {
	r.mu.Lock()
	r.parking = false
	conns := r.snapshotLocked()
	for _, l := range r.listeners {
		l.setDeadline(time.Time{})
	}
	r.paused = false
	close(r.resumed)
	r.resumed = make(chan struct{})
	r.mu.Unlock()
	for _, c := range conns {
		c.finish(nil)
	}
}

// handover ends a successful upgrade: every connection sent now belongs
// to the new process. This process closes its copies with close(2) only,
// never shutdown(2), so no FIN reaches a client. It returns how many
// connections stay tracked here, unsent.
func (r *registry) handover(sent []parkedConn) (kept int) {
	r.mu.Lock()
	for _, p := range sent {
		delete(r.conns, p.c.id)
	}
	kept = len(r.conns)
	lns := r.goneLocked()
	r.mu.Unlock()
	closeListeners(lns)
	for _, p := range sent {
		p.c.finish(ErrHandedOver)
		_ = p.c.Conn.Close()
	}
	return kept
}

// releaseListeners ends a listeners-only upgrade: the listeners now belong
// to the new process and this process stops accepting, while its
// connections stay tracked and running. It returns how many there are.
func (r *registry) releaseListeners() int {
	r.mu.Lock()
	lns := r.goneLocked()
	n := len(r.conns)
	r.mu.Unlock()
	closeListeners(lns)
	return n
}

// goneLocked marks the listeners handed over for good, wakes accepts
// waiting for a pause to end, and returns the listeners for the caller to
// close.
func (r *registry) goneLocked() []*Listener {
	r.gone = true
	lns := r.listeners
	r.listeners = nil
	close(r.resumed)
	return lns
}

// closeListeners closes this process's copies; the new process has its own.
func closeListeners(lns []*Listener) {
	for _, l := range lns {
		_ = l.Listener.Close()
	}
}

// pauseLocked makes listeners stop accepting and wakes blocked accepts.
func (r *registry) pauseLocked() {
	r.paused = true
	for _, l := range r.listeners {
		l.setDeadline(aLongTimeAgo)
	}
}

// enterAccept waits while accepting is paused and counts the caller in.
func (r *registry) enterAccept() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.paused && !r.gone {
		ch := r.resumed
		r.mu.Unlock()
		<-ch
		r.mu.Lock()
	}
	if r.gone {
		return ErrHandedOver
	}
	r.inAccept++
	return nil
}

// leaveAccept counts the caller out, registering the accepted connection in
// the same step (so parkAll never sees neither), or tells it to accept again:
// an accept woken by a pause retries once the pause ends.
func (r *registry) leaveAccept(nc net.Conn, err error, kind string) (c *Conn, retry bool) {
	r.mu.Lock()
	r.inAccept--
	if err == nil {
		c = r.trackLocked(nc, kind, nil)
	}
	// A listener closed under a blocked accept by a listeners-only
	// handover retries too, to learn that it is gone.
	retry = err != nil && (isTimeout(err) && r.paused || r.gone)
	r.mu.Unlock()
	r.notify()
	return c, retry
}
