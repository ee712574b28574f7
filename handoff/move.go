//go:build linux

package handoff

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// Rolling mode's move, in the old process: after the commit, the
// connections are asked to park a wave at a time, and each one is sent as
// soon as it has parked, with the others parked at the same moment, while
// the rest are served here.

const (
	// moveWave is how many connections are asked to park at a time. All
	// at once, every idle one would park in the same instant, and the last
	// of them would wait for all the others to be sent and resumed.
	moveWave = 256
	// waveEvery is the longest between two waves, so that connections
	// busy with a request do not hold up the ones behind them.
	waveEvery = 5 * time.Millisecond
)

// mover is one Rolling move.
type mover struct {
	*link
	log      *slog.Logger
	peer     wire.Hello      // the new process, for its room for fds
	early    map[uint64]bool // connections whose fds went before the park
	reg      *rollingMove
	exited   <-chan struct{} // the new process has exited
	stop     <-chan struct{} // Stop was called: the move hurries; nil once it does
	grace    time.Duration   // how long the move lasts after a stop
	deadline time.Time
	moved    int
	maxWait  time.Duration
	lateFds  int // connections sent with their fds during the move
}

// run asks the connections to park, wave after wave, and sends each one
// that parked, until none is left here or the deadline.
func (m *mover) run() error {
	pending := m.reg.live()
	tick := time.NewTicker(waveEvery)
	defer tick.Stop()
	var asked time.Time
	for {
		if err := m.send(m.reg.takeReady()); err != nil {
			return err
		}
		left, done := m.reg.remaining()
		if done || !time.Now().Before(m.deadline) {
			return nil
		}
		if len(pending) > 0 && (left-len(pending) < moveWave/2 || time.Since(asked) >= waveEvery) {
			k := min(moveWave, len(pending))
			for _, c := range pending[:k] {
				c.ask()
			}
			pending, asked = pending[k:], time.Now()
			continue
		}
		select {
		case <-m.reg.changed:
		case <-tick.C:
		case ev := <-m.events:
			if _, err := m.take(ev); err != nil {
				return err
			}
			if err := ev.msg.ExpectType(wire.TypeProgress); err != nil {
				return fmt.Errorf("handoff: during the move: %w", err)
			}
		case <-m.exited:
			return errors.New("the new process exited")
		case <-m.stop:
			pending = m.hurry(pending)
		}
	}
}

// hurry ends the move sooner for a stop, which waits for it: every
// connection not asked yet is asked now, and the move ends ParkTimeout
// from now at the latest, so that a connection that cannot reach a
// boundary (its handler blocked writing to a client that does not read)
// holds the stop up that long, not MoveTimeout. What has not parked by
// then is left to Stragglers. It returns the connections still to ask:
// none.
func (m *mover) hurry(pending []*Conn) []*Conn {
	m.stop = nil
	for _, c := range pending {
		c.ask()
	}
	if dl := time.Now().Add(m.grace); dl.Before(m.deadline) {
		m.deadline = dl
	}
	m.log.Info("handoff: stop during a rolling move: every connection asked now", "asked", len(pending),
		"ends_within", m.grace)
	return nil
}

// send sends the parked connections (by id if their fds went early, with
// their fds otherwise) and the ids of early ones closed here since.
func (m *mover) send(parked []parkedConn, closed []uint64) error {
	for len(closed) > 0 {
		k := min(len(closed), wire.MaxClosedIDs)
		if err := m.ch.Send(wire.Closed{IDs: closed[:k]}, nil); err != nil {
			return err
		}
		closed = closed[k:]
	}
	var known, late []parkedConn
	for _, p := range parked {
		if m.early[p.c.id] {
			known = append(known, p)
		} else {
			late = append(late, p)
		}
	}
	if err := m.sendRecords(wire.TypeParked, known, m.sent); err != nil {
		return err
	}
	late = m.fit(late)
	m.lateFds += len(late)
	return m.sendRecords(wire.TypeConns, late, m.sent)
}

// fit keeps the late connections the new process has room for; the others
// resume here and are left to the deadline's policy.
func (m *mover) fit(late []parkedConn) []parkedConn {
	room := int(m.peer.FdLimit) - int(m.peer.FdOpen) - fdHeadroom - len(m.early) - m.lateFds
	if len(late) <= room {
		return late
	}
	room = max(room, 0)
	m.log.Warn("handoff: the new process has no room for more connections; they stay here",
		"conns", len(late)-room, "fd_limit", m.peer.FdLimit)
	for _, p := range late[room:] {
		p.c.finish(nil)
	}
	return late[:room]
}

// sent hands over connections the new process has been sent.
func (m *mover) sent(batch []parkedConn) {
	now := time.Now()
	for _, p := range batch {
		m.maxWait = max(m.maxWait, now.Sub(p.at))
	}
	m.moved += len(batch)
	m.reg.movedOut(batch)
}

// finish ends the asking, sends what parked meanwhile, applies the
// stragglers' policy and says END.
func (m *mover) finish(closeThem bool) (stayed, closed int, err error) {
	parked, stayed, closed := m.reg.stopMove(closeThem)
	_, gone := m.reg.takeReady()
	if err := m.send(parked, gone); err != nil {
		return 0, 0, err
	}
	if stayed+closed > 0 {
		m.log.Warn("handoff: connections did not reach a message boundary before the move's deadline",
			"stayed", stayed, "closed", closed)
	}
	// Every frame adopted before END, so that the new process never
	// finds the channel closed while it still has something to say.
	if err := m.waitAcked(m.seq, 0); err != nil {
		return 0, 0, err
	}
	end := wire.End{Moved: uint32(m.moved), Stayed: uint32(stayed), Closed: uint32(closed)}
	return stayed, closed, m.ch.Send(end, nil)
}
