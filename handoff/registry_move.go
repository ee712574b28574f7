package handoff

// The registry's part in a Rolling move (move.go): the listeners pause,
// the connections are asked to park a few at a time, and each one that
// parks is queued to be sent on its own.

// rollingMove is the registry in one Rolling move, from startMove until
// the move ends (endMove) or is taken back (resumeAll).
type rollingMove struct{ *registry }

// startMove begins a Rolling move at the commit: this process stops
// accepting (it keeps its listeners, to take them back if the new process
// dies), a connection tracked from now on is asked to park at once, and a
// parked connection queues in ready. early names the connections whose
// fds the new process holds already.
func (r *registry) startMove(early map[uint64]bool) *rollingMove {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.move = &moveQueue{early: early}
	r.setLocked(regMoving)
	return &rollingMove{r}
}

// takeReady returns the connections parked since the last call, with what
// travels with them, and the early connections closed here since.
func (r *rollingMove) takeReady() ([]parkedConn, []uint64) {
	r.mu.Lock()
	ready, closed := r.move.take()
	r.mu.Unlock()
	out := make([]parkedConn, len(ready))
	for i, c := range ready {
		out[i] = c.parkedNow()
	}
	return out, closed
}

// parkedNow returns c, which is parked, with its unread bytes and state.
func (c *Conn) parkedNow() parkedConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return parkedConn{c: c, unread: c.unreadAtPark, state: c.saved, at: c.parkedAt}
}

// movedOut gives sent connections to the new process: their handlers' Park
// returns ErrHandedOver, and this process closes its copies (closeCopies),
// off the mover's way: closing a frame's 256 took milliseconds under load,
// which every connection parked behind them waited.
func (r *rollingMove) movedOut(sent []parkedConn) {
	r.mu.Lock()
	for _, p := range sent {
		r.dropLocked(p.c.id)
	}
	r.mu.Unlock()
	for _, p := range sent {
		p.c.finish(ErrHandedOver)
	}
	closeCopies(sent)
	r.notify()
}

// remaining counts the connections still here and, of them, those parked
// and not yet taken to be sent, and reports whether the move is over: none
// left and no accept in flight.
func (r *rollingMove) remaining() (n, queued int, done bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	queued = r.move.queued()
	return len(r.conns), queued, len(r.conns) == 0 && r.inAccept == 0 && queued == 0
}

// stopMove ends the asking, at the move's end or deadline: a connection
// asked but not parked runs on here, and is closed too if closeThem; so is
// one never asked. It returns the connections that had parked meanwhile,
// which the caller still sends, and how many stay here (drained) and were
// closed.
func (r *rollingMove) stopMove(closeThem bool) (parked []parkedConn, stay, closed int) {
	r.mu.Lock()
	conns := r.snapshotLocked() // the queued ones among them: still parked
	r.setLocked(regDraining)
	r.mu.Unlock()
	for _, c := range conns {
		if c.unask() {
			parked = append(parked, c.parkedNow())
			continue
		}
		if closeThem {
			_ = c.Close()
			closed++
		} else {
			stay++
		}
	}
	return parked, stay, closed
}

// endMove ends a Rolling move that completed: the listeners are closed
// for good (the new process has its own), and connections tracked from
// now on are not (see track). Stragglers left to drain stay tracked.
func (r *rollingMove) endMove() {
	r.mu.Lock()
	lns := r.setLocked(regHandedOver)
	r.mu.Unlock()
	closeListeners(lns)
}

// unask stops asking c to park, unless its handler has parked already:
// then it reports true, and c waits for its outcome as any parked one.
func (c *Conn) unask() (isParked bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == parked {
		return true
	}
	c.finishLocked(nil)
	return false
}
