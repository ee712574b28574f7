//go:build linux

package handoff

import (
	"errors"
	"fmt"
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
	s        *parentSession
	reg      *registry
	exited   <-chan struct{} // the new process has exited
	stop     <-chan struct{} // Stop was called: the move hurries; nil once it does
	grace    time.Duration   // how long the move lasts after a stop
	deadline time.Time
	moved    int
	maxWait  time.Duration
	lateFds  int // connections sent with their fds during the move
}

// roll ends a Rolling upgrade from its commit point: this process stops
// accepting, tells the new process it serves now, and moves every
// connection to it. If the new process fails before the last one has
// moved, this process takes everything back (takeBack). A stop (stop
// closed) hurries the move, see mover.hurry.
func (h *handing) roll(stop <-chan struct{}) error {
	u, s, p := h.u, h.s, h.p
	u.reg.startMove(s.early)
	s.sendCommit()
	start := time.Now()
	m := &mover{s: s, reg: u.reg, exited: p.exited, stop: stop, grace: u.opts.ParkTimeout,
		deadline: start.Add(u.opts.MoveTimeout)}
	err := s.serving(5 * time.Second)
	if err == nil {
		err = m.run()
	}
	var stayed, closed int
	if err == nil {
		stayed, closed, err = m.finish(u.opts.Stragglers == CloseStragglers)
	}
	s.stats.Move, s.stats.MaxWait, s.stats.Conns = time.Since(start), m.maxWait, m.moved
	s.stats.Stayed, s.stats.Closed = stayed, closed
	if err != nil {
		return h.takeBack(m, err)
	}
	u.reg.endMove()
	u.plain.release()
	s.ch.Close()
	s.emit(Event{Phase: PhaseMove, Took: s.stats.Move, Conns: m.moved})
	u.log.Info("handoff: rolling move done", "to", s.pid, "moved", m.moved, "early", s.stats.Early,
		"stayed", stayed, "closed", closed, PhaseMove, s.stats.Move, "max_wait", m.maxWait)
	return nil
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
		case ev := <-m.s.events:
			if _, err := m.s.take(ev); err != nil {
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
	m.s.u.log.Info("handoff: stop during a rolling move: every connection asked now", "asked", len(pending),
		"ends_within", m.grace)
	return nil
}

// send sends the parked connections (by id if their fds went early, with
// their fds otherwise) and the ids of early ones closed here since.
func (m *mover) send(parked []parkedConn, closed []uint64) error {
	for len(closed) > 0 {
		k := min(len(closed), wire.MaxClosedIDs)
		if err := m.s.ch.Send(wire.Closed{IDs: closed[:k]}, nil); err != nil {
			return err
		}
		closed = closed[k:]
	}
	var known, late []parkedConn
	for _, p := range parked {
		if m.s.early[p.c.id] {
			known = append(known, p)
		} else {
			late = append(late, p)
		}
	}
	if err := m.s.sendRecords(wire.TypeParked, known, m.sent); err != nil {
		return err
	}
	late = m.fit(late)
	m.lateFds += len(late)
	return m.s.sendRecords(wire.TypeConns, late, m.sent)
}

// fit keeps the late connections the new process has room for; the others
// resume here and are left to the deadline's policy.
func (m *mover) fit(late []parkedConn) []parkedConn {
	room := int(m.s.peer.FdLimit) - int(m.s.peer.FdOpen) - fdHeadroom - len(m.s.early) - m.lateFds
	if len(late) <= room {
		return late
	}
	room = max(room, 0)
	m.s.u.log.Warn("handoff: the new process has no room for more connections; they stay here",
		"conns", len(late)-room, "fd_limit", m.s.peer.FdLimit)
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
		m.s.u.log.Warn("handoff: connections did not reach a message boundary before the move's deadline",
			"stayed", stayed, "closed", closed)
	}
	// Every frame adopted before END, so that the new process never
	// finds the channel closed while it still has something to say.
	if err := m.s.waitAcked(m.s.seq, 0); err != nil {
		return 0, 0, err
	}
	end := wire.End{Moved: uint32(m.moved), Stayed: uint32(stayed), Closed: uint32(closed)}
	return stayed, closed, m.s.ch.Send(end, nil)
}

// takeBack ends a Rolling move whose new process failed: it is killed,
// and this process serves again everything it still has, accepts again
// and names itself in the PID file. The connections that had moved are
// lost with the new process.
func (h *handing) takeBack(m *mover, err error) error {
	u, s, p := h.u, h.s, h.p
	if ended := p.describe(); ended != nil {
		err = fmt.Errorf("%w (%w)", ended, err)
	}
	s.abort(err)
	if kerr := p.kill(); kerr != nil {
		u.log.Error("handoff: rolling move", "err", kerr)
	}
	u.unwatchStops()
	u.m.tookBack()
	u.reg.resumeAll()
	kept, _ := u.reg.remaining()
	if perr := u.pid.write(); perr != nil {
		u.log.Error("handoff: took the service back, but", "err", perr)
	}
	u.m.serves(0)
	return fmt.Errorf("handoff: the new process (pid %d) failed during the rolling move: %w; "+
		"this process took the listeners back and serves the %d connections it still had; "+
		"the %d that had moved were lost with it", p.pid, err, kept, m.moved)
}
