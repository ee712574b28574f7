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
//
// A parked connection is served by neither process until the new one has
// taken it up, so the move keeps few in flight: a wave is asked only while
// fewer than inFlightMost connections are asked and not yet acknowledged
// by the new process. Asking on a timer alone let parked connections
// queue behind thousands of others on a busy machine (the frames' window
// holds up to 8,192): at 15k connections the longest stall of a request
// was 152 ms in rolling mode, against 64 ms so bounded (bench/README.md).

const (
	// moveWave is how many connections are asked to park at a time. All
	// at once, every idle one would park in the same instant, and the last
	// of them would wait for all the others to be sent and resumed. 64
	// kept the same stalls as 128 and made the move at 15k 20% longer:
	// the new process took up fewer a second (bench/README.md).
	moveWave = 128
	// inFlightMost bounds the connections asked and not yet acknowledged
	// when a wave is asked, so that the new process always has the next
	// ones to take up while the old process sends them.
	inFlightMost = 2 * moveWave
	// waveEvery is the longest between two waves, so that connections
	// busy with a request do not hold up the ones behind them: past it a
	// wave is asked while fewer than moveWave of those in flight are
	// parked and unacknowledged.
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
	lateFds  int         // connections sent with their fds during the move
	inFlight []sentFrame // frames sent and not yet acknowledged, oldest first
	unacked  int         // the connections in them
}

// sentFrame is a frame of the move sent and not yet acknowledged: its
// connections wait in the new process until it has taken them up.
type sentFrame struct {
	seq    uint32
	conns  int
	oldest time.Time // when the first of them parked
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
		left, queued, done := m.reg.remaining()
		if done || !time.Now().Before(m.deadline) {
			return nil
		}
		if len(pending) > 0 && mayAsk(left-len(pending), queued, m.unacked, time.Since(asked)) {
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
			m.noteAcked()
		case <-m.exited:
			return errors.New("the new process exited")
		case <-m.stop:
			pending = m.hurry(pending)
		}
	}
}

// mayAsk reports whether the next wave may be asked: here connections
// are asked and still here (parked, or busy with a request), queued of
// them parked and not yet sent, unacked sent and not yet taken up, and
// since is the time since the last wave.
func mayAsk(here, queued, unacked int, since time.Duration) bool {
	if here+unacked < inFlightMost {
		return true
	}
	return since >= waveEvery && queued+unacked < moveWave
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
	err := m.sendRecords(wire.TypeConns, late, m.sent)
	m.noteAcked()
	return err
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

// sent hands over connections the new process has been sent, and notes
// their frame until the new process acknowledges it.
func (m *mover) sent(batch []parkedConn) {
	f := sentFrame{seq: m.seq - 1, conns: len(batch), oldest: batch[0].at}
	for _, p := range batch {
		if p.at.Before(f.oldest) {
			f.oldest = p.at
		}
	}
	m.inFlight = append(m.inFlight, f)
	m.unacked += len(batch)
	m.moved += len(batch)
	m.reg.movedOut(batch)
}

// noteAcked forgets the frames the new process has acknowledged: their
// connections are served there. The longest a connection waited, from
// its park until then, is the move's MaxWait.
func (m *mover) noteAcked() {
	now := time.Now()
	for len(m.inFlight) > 0 && m.inFlight[0].seq < m.acked {
		f := m.inFlight[0]
		m.maxWait = max(m.maxWait, now.Sub(f.oldest))
		m.unacked -= f.conns
		m.inFlight = m.inFlight[1:]
	}
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
	m.noteAcked()
	end := wire.End{Moved: uint32(m.moved), Stayed: uint32(stayed), Closed: uint32(closed)}
	return stayed, closed, m.ch.Send(end, nil)
}
