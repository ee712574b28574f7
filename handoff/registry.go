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
	// keep and release give the supervisor a copy of a socket and take it
	// back (Upgrader.keep, Upgrader.release); set once by New.
	keep, release func(v any, kind string, listening bool)

	mu        sync.Mutex
	state     regState // changed by setLocked only
	conns     map[uint64]*Conn
	nextID    uint64
	listeners []*Listener
	resumed   chan struct{} // closed when a pause or a freeze ends, or the listeners are gone
	inAccept  int           // goroutines inside an underlying Accept
	changed   chan struct{} // a park-relevant count changed
	parkedN   atomic.Int64  // handlers parked since parkAll began: tells when a full scan may succeed
	move      *moveQueue    // a Rolling move's queue (registry_move.go); nil outside one
	// empty is closed while conns is empty, and made anew when a
	// connection joins an empty map: Drain waits on it. (changed cannot
	// serve: parkAll and the move each take its one wake-up.)
	empty chan struct{}
}

// regState is where the registry is in an upgrade. Only setLocked changes
// it, and with it what the state implies for the listeners and waiters.
//
//	state            listeners        new connection      reached by
//	regServing       accept           tracked             New, resumeAll
//	regParking       paused           asked to park       parkAll
//	regFrozen        paused           waits for outcome   freeze (all parked)
//	regMoving        paused           asked to park       startMove (Rolling)
//	regDraining      paused           tracked             stopMove (move's end)
//	regReleased      gone             tracked             releaseListeners
//	regHandedOver    gone             untracked           handover, endMove
type regState uint8

const (
	regServing regState = iota
	regParking
	regFrozen
	regMoving
	regDraining
	regReleased
	regHandedOver
)

// paused: the listeners must not accept until the state changes.
func (s regState) paused() bool { return s >= regParking && s <= regDraining }

// gone: the listeners were handed over for good.
func (s regState) gone() bool { return s == regReleased || s == regHandedOver }

// asksPark: a connection tracked now is asked to park at once, so that the
// park or the move cannot finish without it.
func (s regState) asksPark() bool { return s == regParking || s == regFrozen || s == regMoving }

// setLocked moves the registry to state to, and does what entering it
// implies: pausing or waking the listeners, waking accepts and tracks
// that wait, dropping a move's queue. Entering a gone state returns the
// listeners for the caller to close outside the lock.
func (r *registry) setLocked(to regState) (gone []*Listener) {
	from := r.state
	r.state = to
	switch {
	case to == regServing:
		r.move = nil
		for _, l := range r.listeners {
			l.setDeadline(time.Time{})
		}
		close(r.resumed)
		r.resumed = make(chan struct{})
	case to.gone():
		r.move = nil
		gone, r.listeners = r.listeners, nil
		close(r.resumed)
	case to.paused() && !from.paused():
		for _, l := range r.listeners {
			l.setDeadline(aLongTimeAgo) // wakes blocked accepts
		}
	}
	if to == regDraining && r.move != nil {
		r.move.ready = nil // the queued ones are still parked: stopMove returns them
	}
	return gone
}

// moveQueue is what the registry keeps for a Rolling move, from startMove
// until the move ends or is taken back.
type moveQueue struct {
	ready  []*Conn         // parked, not yet sent
	early  map[uint64]bool // ids whose fds the new process holds already
	closed []uint64        // of them, closed here since: the new process closes its copies
}

// closedHere notes that connection id closed here during the move: if the
// new process holds its fd, it must close its copy too.
func (q *moveQueue) closedHere(id uint64) {
	if q.early[id] {
		q.closed = append(q.closed, id)
	}
}

// take empties the queue: the connections parked and the early ones closed
// since the last call. A nil queue (no move) holds none.
func (q *moveQueue) take() ([]*Conn, []uint64) {
	if q == nil {
		return nil, nil
	}
	ready, closed := q.ready, q.closed
	q.ready, q.closed = nil, nil
	return ready, closed
}

// queued counts the parked connections not yet taken.
func (q *moveQueue) queued() int {
	if q == nil {
		return 0
	}
	return len(q.ready)
}

// parkedConn is a connection ready to travel: its handler is blocked in Park.
type parkedConn struct {
	c      *Conn
	unread []byte
	state  []byte
	at     time.Time // when it parked
}

func newRegistry(maxBuffered int) *registry {
	return &registry{
		maxBuffered: maxBuffered,
		keep:        func(any, string, bool) {},
		release:     func(any, string, bool) {},
		conns:       make(map[uint64]*Conn),
		resumed:     make(chan struct{}),
		changed:     make(chan struct{}, 1),
		empty:       closedChan(),
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// emptied returns a channel that is closed once no connection is tracked.
func (r *registry) emptied() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.empty
}

// dropLocked stops tracking connection id, if it is tracked.
func (r *registry) dropLocked(id uint64) {
	if _, ok := r.conns[id]; !ok {
		return
	}
	delete(r.conns, id)
	if len(r.conns) == 0 {
		close(r.empty)
	}
}

// track registers nc, taking ownership of it. A connection that arrives
// while the process is parking is asked to park at once, so that parkAll
// waits for it. Once parkAll has listed the parked connections, track waits
// for the upgrade's outcome (so SaveState must not call it): after a
// rollback it registers nc as usual; after a handover nc was not sent, and
// it returns an untracked Conn that serves nc in this process. An untracked
// Conn is never parked nor listed by Upgrader.Conns, and the application
// owns it: it closes it itself.
func (r *registry) track(nc net.Conn, kind string, unread []byte) *Conn {
	c := r.newConn(nc, kind, unread)
	r.add(c)
	return c
}

// add registers connections made by newConn, as track does, under one
// hold of the lock and with one notification: a takeover's parked
// connections, a moved frame's. Registered one by one from their own
// goroutines as the gate opened, 15k of them queued on the lock at once,
// 85 ms each on average of a 15k takeover's resume (bench/README.md,
// "The fourth run").
func (r *registry) add(cs ...*Conn) {
	r.mu.Lock()
	for r.state == regFrozen {
		r.waitLocked(r.resumed)
	}
	for _, c := range cs {
		r.addLocked(c)
	}
	r.mu.Unlock()
	r.notify()
}

// newConn makes a Conn of nc, not yet registered.
func (r *registry) newConn(nc net.Conn, kind string, unread []byte) *Conn {
	return &Conn{Conn: nc, kind: kind, max: r.maxBuffered, buf: unread}
}

// addLocked registers c. While parking, the connection is published
// already asked to park, so that parkAll cannot finish without it. After
// a handover it is left untracked (see track).
func (r *registry) addLocked(c *Conn) {
	if r.state == regHandedOver {
		return
	}
	c.reg = r
	r.nextID++
	c.id = r.nextID
	if r.state.asksPark() {
		c.ask()
	}
	if len(r.conns) == 0 {
		r.empty = make(chan struct{})
	}
	r.conns[c.id] = c
}

func (r *registry) remove(c *Conn) {
	r.mu.Lock()
	r.dropLocked(c.id)
	if r.state == regMoving {
		r.move.closedHere(c.id)
	}
	r.mu.Unlock()
	r.notify()
}

// closed forgets c, which its handler closed, and asks the supervisor
// to drop its copy.
func (r *registry) closed(c *Conn) {
	r.remove(c)
	r.release(c.Conn, c.kind, false)
}

// parkedOne is called by a Conn whose handler has just parked.
func (r *registry) parkedOne(c *Conn) {
	r.parkedN.Add(1)
	r.mu.Lock()
	if r.state == regMoving {
		r.move.ready = append(r.move.ready, c)
	}
	r.mu.Unlock()
	r.notify()
}

func (r *registry) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// parkAll stops the listeners, asks every connection to park and waits until
// all have, or until ctx ends. On success the registry stays frozen until
// the caller calls resumeAll or handover; on error the caller must call
// resumeAll.
func (r *registry) parkAll(ctx context.Context) ([]parkedConn, error) {
	r.mu.Lock()
	r.parkedN.Store(0)
	r.setLocked(regParking)
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
	for scan := true; ; {
		if scan {
			ready, waiting := r.freeze()
			if waiting == 0 {
				return ready, nil
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%d connections did not reach a message boundary: %w", waiting, context.Cause(ctx))
			}
		}
		select {
		case <-r.changed:
			scan = r.mayAllBeParked()
		case <-tick.C:
			scan = true
		case <-ctx.Done():
			scan = true
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

// freeze lists the parked connections and counts those (and the accepts
// in flight) still to come. When none is to come it freezes the registry
// in the same step: a connection tracked after the list is made waits for
// the outcome, instead of being asked to park and left behind.
func (r *registry) freeze() ([]parkedConn, int) {
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
	if waiting == 0 {
		r.setLocked(regFrozen)
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
	conns := r.snapshotLocked()
	r.setLocked(regServing)
	r.mu.Unlock()
	for _, c := range conns {
		c.finish(nil)
	}
}

// handover ends a successful upgrade: the connections sent now belong to
// the new process, and their handlers' Park returns ErrHandedOver. Any
// other connection was not sent: it stays tracked and running here, and
// kept counts them. The listeners are closed, and connections tracked
// from now on are not (see track).
//
// This process's copies of the sent connections are closed by the
// goroutine it returns the end of (closed when done), with close(2) only,
// never shutdown(2), so no FIN reaches a client. Not here: at 15k
// connections the closes (epoll_ctl and close each) took 0.4 s of wall
// time while the new process served its backlog on the same cores, all
// of it on the old process's way to its exit, where the kernel closes
// whatever is left at once (bench/README.md, "Where the time goes").
func (r *registry) handover(sent []parkedConn) (kept int, closed <-chan struct{}) {
	r.mu.Lock()
	for _, p := range sent {
		r.dropLocked(p.c.id)
	}
	others := r.snapshotLocked()
	lns := r.setLocked(regHandedOver)
	r.mu.Unlock()
	closeListeners(lns)
	for _, p := range sent {
		p.c.finish(ErrHandedOver)
	}
	for _, c := range others {
		c.finish(nil)
	}
	return len(others), closeCopies(sent)
}

// closeCopies closes this process's copies of connections handed over, on
// a goroutine of its own, with close(2) only: no FIN reaches a client. The
// channel it returns is closed when they all are.
func closeCopies(sent []parkedConn) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, p := range sent {
			_ = p.c.Conn.Close()
		}
	}()
	return done
}

// releaseListeners ends a listeners-only upgrade: the listeners now belong
// to the new process and this process stops accepting, while its
// connections stay tracked and running. It returns how many there are.
func (r *registry) releaseListeners() int {
	r.mu.Lock()
	lns := r.setLocked(regReleased)
	n := len(r.conns)
	r.mu.Unlock()
	closeListeners(lns)
	return n
}

// closeListeners closes this process's copies; the new process has its own.
func closeListeners(lns []*Listener) {
	for _, l := range lns {
		_ = l.Listener.Close()
	}
}

// enterAccept waits while accepting is paused and counts the caller in.
func (r *registry) enterAccept() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.state.paused() {
		r.waitLocked(r.resumed)
	}
	if r.state.gone() {
		return ErrHandedOver
	}
	r.inAccept++
	return nil
}

// waitLocked waits for ch to close, releasing r.mu meanwhile.
func (r *registry) waitLocked(ch <-chan struct{}) {
	r.mu.Unlock()
	<-ch
	r.mu.Lock()
}

// leaveAccept counts the caller out, registering the accepted connection in
// the same step (so parkAll never sees neither), or tells it to accept again:
// an accept woken by a pause retries once the pause ends.
func (r *registry) leaveAccept(nc net.Conn, err error, kind string) (c *Conn, retry bool) {
	r.mu.Lock()
	r.inAccept--
	if err == nil {
		c = r.newConn(nc, kind, nil)
		r.addLocked(c)
	}
	// A listener closed under a blocked accept by a listeners-only
	// handover retries too, to learn that it is gone.
	retry = err != nil && (isTimeout(err) && r.state.paused() || r.state.gone())
	r.mu.Unlock()
	r.notify()
	return c, retry
}

// addListener registers a listener made through Listen.
func (r *registry) addListener(l *Listener) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listeners = append(r.listeners, l)
}

// listenerList returns the listeners made through Listen and not yet
// handed over.
func (r *registry) listenerList() []*Listener {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Listener(nil), r.listeners...)
}

// listenersGone reports whether the listeners were handed over for good.
func (r *registry) listenersGone() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state.gone()
}
