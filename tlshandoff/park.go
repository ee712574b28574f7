package tlshandoff

import (
	"errors"
	"fmt"

	"github.com/handoff-dev/handoff/handoff"
)

// isPark reports a handoff.Conn asking its reader to park: Read returns
// it as is, so that the handler parks (Park) as with a plain
// handoff.Conn.
func isPark(err error) bool { return errors.Is(err, handoff.ErrPark) }

// Park hands the connection to the upgrade in progress, with app, the
// handler's own state for it, as handoff.Conn.Park does; call it once
// Read has returned handoff.ErrPark. Its TLS state (keys, sequence
// numbers, bytes read and not yet consumed) goes with app, and in the
// new process Server.Resume, given the handoff.Conn and the state
// handoff.Options.Resume received, rebuilds the Conn and returns app.
//
// It returns nil if the upgrade rolled back (the connection carries on
// here, where it stopped), handoff.ErrHandedOver if the new process owns
// the connection (the handler returns without touching it; its keys are
// cleared here), or an error if the connection cannot move (not tracked
// by a handoff.Upgrader, or not Movable), as handoff.Conn.Park's own.
// Writes wait while it is parked: none may be sealed here under a
// sequence number the new process reuses.
func (c *Conn) Park(app []byte) error {
	if ok, why := c.Movable(); !ok {
		return fmt.Errorf("tlshandoff: park: connection cannot move: %s", why)
	}
	hc, ok := c.raw.(*handoff.Conn)
	if !ok {
		return errors.New("tlshandoff: park: connection not tracked by a handoff.Upgrader")
	}
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	state, err := c.marshalLocked(app)
	if err != nil {
		return err
	}
	err = hc.Park(state)
	clear(state)
	if errors.Is(err, handoff.ErrHandedOver) {
		c.forgetLocked()
	}
	return err
}

// Forget clears the keys this process holds of a connection whose
// state MarshalState gave to another process that now owns the
// connection (a caller that parks the handoff.Conn itself, with the
// state inside its own: package wshandoff), as Park does at a handover;
// every later Read and Write fails with handoff.ErrHandedOver, and Close
// sends no close_notify. It does not touch the transport.
func (c *Conn) Forget() {
	if !c.hsDone.Load() || !c.movable {
		return
	}
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	c.forgetLocked()
}

// forgetLocked clears the keys this process holds of a connection that
// has moved, and makes every later Read and Write fail as the
// handoff.Conn's do.
func (c *Conn) forgetLocked() {
	for _, h := range []*half{c.r.in, c.w.out} {
		clear(h.key)
		clear(h.iv)
		clear(h.secret)
	}
	clear(c.r.plain)
	c.r.plain, c.r.rbuf, c.r.hsMsg = nil, nil, nil
	c.r.err, c.w.err = handoff.ErrHandedOver, handoff.ErrHandedOver
}
