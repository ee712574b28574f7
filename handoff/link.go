//go:build linux

package handoff

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// sendWindow is how many CONNS frames may wait for PROGRESS. Unreceived
// fds count against the sender's limits (ETOOMANYREFS, shared/LIMITS.md);
// 8 frames hold at most 2024.
const sendWindow = 8

// serving waits, up to d, for the new process's SERVING.
func (s *link) serving(d time.Duration) error {
	s.ch.SetDeadline(time.Now().Add(d))
	defer s.ch.SetDeadline(time.Time{})
	m, err := s.next()
	if err == nil {
		err = m.Expect(&wire.Serving{})
	}
	return err
}

// link is the old process's side of the channel: the frames it sends,
// counted for the new process's acknowledgements (PROGRESS), and the new
// process's frames, read on a goroutine of their own as events.
type link struct {
	ch       *wire.Channel
	events   chan frameEvent
	readDone chan struct{} // closed when readEvents has returned
	seq      uint32        // CONNS and PARKED frames sent
	acked    uint32        // of them, acknowledged by PROGRESS
}

// frameEvent is a frame from the child, or the error that ended reading.
type frameEvent struct {
	msg wire.Msg
	err error
}

// sendEarlyBatch sends one CONNS frame of running connections. Each fd is
// sent while the connection cannot be closed under it (withHeldFds): its
// handler still runs and may close it, and a bare fd number could by then
// name another socket. A connection already closed is left out.
func (s *link) sendEarlyBatch(conns []*Conn, sent map[uint64]bool) error {
	if err := s.waitAcked(s.seq, sendWindow-1); err != nil {
		return err
	}
	return withHeldFds(conns, func(kept []*Conn, fds []int) error {
		if len(kept) == 0 {
			return nil
		}
		recs := make([]wire.Record, len(kept))
		for i, c := range kept {
			recs[i] = wire.Record{ID: c.id, Kind: c.kind}
		}
		if err := s.ch.Send(wire.Conns{Seq: s.seq, Records: recs}, fds); err != nil {
			return err
		}
		s.seq++
		for _, r := range recs {
			sent[r.ID] = true
		}
		return nil
	})
}

// withHeldFds calls send with the fds of those of conns still open (kept
// says which), each held by its connection's SyscallConn Control until
// send returns: a handler's Close meanwhile waits for send to close(2),
// so each number stays its connection's. It spares the old process,
// which serves meanwhile, a dup and a close a connection (30k system
// calls at 15k connections); the kernel takes its own reference to each
// file as sendmsg queues it.
func withHeldFds(conns []*Conn, send func(kept []*Conn, fds []int) error) error {
	kept, fds := make([]*Conn, 0, len(conns)), make([]int, 0, len(conns))
	var hold func(i int) error
	hold = func(i int) error {
		if i == len(conns) {
			return send(kept, fds)
		}
		var err error
		if cerr := controlConn(conns[i].Conn, func(fd uintptr) {
			kept, fds = append(kept, conns[i]), append(fds, int(fd))
			err = hold(i + 1)
		}); cerr != nil {
			return hold(i + 1) // closed already: left out
		}
		return err
	}
	return hold(0)
}

// readEvents forwards the child's frames until the channel fails.
func (s *link) readEvents() {
	defer close(s.readDone)
	for {
		m, err := s.ch.RecvNoFds()
		if errors.Is(err, syscall.ECONNRESET) {
			// The child closed with frames of ours unread; what it sent
			// before (an ABORT and its reason) is still queued behind
			// the error.
			continue
		}
		s.events <- frameEvent{m, err}
		if err != nil {
			return
		}
	}
}

// rejection returns the child's ABORT, if it sent one before the upgrade
// failed here for another reason (a send that timed out, or the child's
// exit noticed first), looking for up to d at what it sent.
func (s *link) rejection(d time.Duration) error {
	until := time.Now().Add(d)
	if s.events != nil {
		if rej, done := s.rejectionRead(until); rej != nil || !done {
			return rej
		}
	}
	// Nobody reads the channel now: read what is left on it.
	s.ch.SetDeadline(until)
	for {
		_, err := s.ch.RecvNoFds()
		switch {
		case errors.Is(err, ErrRejected):
			return err
		case errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(until):
			// The upgrade's ended context may set the deadline in the
			// past after this one: bindDeadline's wake-up runs on a
			// goroutine of its own. An ABORT already here is still read.
			s.ch.SetDeadline(until)
		case err != nil && !errors.Is(err, syscall.ECONNRESET):
			return nil
		}
	}
}

// rejectionRead looks for an ABORT among the frames readEvents read, and
// reports whether readEvents has ended.
func (s *link) rejectionRead(until time.Time) (rej error, done bool) {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	for {
		select {
		case ev := <-s.events:
			if errors.Is(ev.err, ErrRejected) {
				return ev.err, true
			}
		case <-s.readDone:
			for {
				select {
				case ev := <-s.events:
					if errors.Is(ev.err, ErrRejected) {
						return ev.err, true
					}
				default:
					return nil, true
				}
			}
		case <-t.C:
			return nil, false
		}
	}
}

// whyEnded returns the error that ended readEvents, once it has ended: a
// frame read before it is unexpected here.
func (s *link) whyEnded() error {
	m, err := s.next()
	if err != nil {
		return err
	}
	return protoErr("unexpected %s", m.Type)
}

// nextEvent returns the child's next frame, counting PROGRESS frames.
func (s *link) nextEvent() (wire.Msg, error) {
	return s.take(<-s.events)
}

// take returns one of the child's frames, counting PROGRESS frames.
func (s *link) take(ev frameEvent) (wire.Msg, error) {
	if ev.err != nil {
		return wire.Msg{}, ev.err
	}
	if ev.msg.Type == wire.TypeProgress {
		var p wire.Progress
		if err := ev.msg.Expect(&p); err != nil || p.Seq != s.acked {
			return wire.Msg{}, protoErr("PROGRESS out of order: got %d, want %d", p.Seq, s.acked)
		}
		s.acked++
	}
	return ev.msg, nil
}

// next returns the child's next frame other than PROGRESS.
func (s *link) next() (wire.Msg, error) {
	for {
		m, err := s.nextEvent()
		if err != nil || m.Type != wire.TypeProgress {
			return m, err
		}
	}
}

// waitAcked waits until at most window of sent frames are unacknowledged.
func (s *link) waitAcked(sent, window uint32) error {
	for sent-s.acked > window {
		m, err := s.nextEvent()
		if err != nil {
			return err
		}
		if err := m.ExpectType(wire.TypeProgress); err != nil {
			return fmt.Errorf("handoff: sending connections: %w", err)
		}
	}
	return nil
}

// sendRecords sends parked connections in frames of typ, at most
// wire.MaxRecords(typ) and about wire.MaxBatchBytes each; CONNS frames carry the fds.
// sent, if set, is called with each frame's connections once it is sent.
func (s *link) sendRecords(typ wire.Type, parked []parkedConn, sent func([]parkedConn)) error {
	for len(parked) > 0 {
		n, size := 0, 0
		for n < len(parked) && n < wire.MaxRecords(typ) && (n == 0 || size+parked[n].size() <= wire.MaxBatchBytes) {
			size += parked[n].size()
			n++
		}
		if err := s.waitAcked(s.seq, sendWindow-1); err != nil {
			return err
		}
		if err := s.sendBatch(typ, parked[:n]); err != nil {
			return err
		}
		s.seq++
		if sent != nil {
			sent(parked[:n])
		}
		parked = parked[n:]
	}
	return nil
}

func (p parkedConn) size() int { return p.record().Size() }

func (p parkedConn) record() wire.Record {
	return wire.Record{ID: p.c.id, Kind: p.c.kind, Unread: p.unread, State: p.state}
}

// sendBatch sends one frame of parked connections. A late connection's fd
// travels as a duplicate made under the connection's lock, as an early
// one's does: even parked, a bare fd number is only as safe as every
// caller of Close.
func (s *link) sendBatch(typ wire.Type, batch []parkedConn) error {
	recs := make([]wire.Record, len(batch))
	var fds []int
	defer func() { wire.CloseFds(fds) }()
	for i, p := range batch {
		recs[i] = p.record()
		if typ != wire.TypeConns {
			continue
		}
		fd, err := dupConnFd(p.c.Conn)
		if err != nil {
			return fmt.Errorf("handoff: parked connection %d: %w", p.c.id, err)
		}
		fds = append(fds, fd)
	}
	return s.ch.Send(wire.Batch(typ, s.seq, recs), fds)
}

// abort tells the child why the upgrade ends, for its log; the caller
// kills it.
// abortAfterPeer says ABORT to a peer that lives on, and closes the
// channel once the peer has read what was sent before it (up to d): the
// connections in those frames are the peer's now, this process having
// closed its copies. Closing at once, with the peer's PROGRESS frames
// unread here, would reset the connection, and the peer would get
// ECONNRESET before the frames queued for it.
func (s *link) abortAfterPeer(cause error, d time.Duration) {
	s.ch.SetDeadline(time.Now().Add(d))
	defer s.ch.Close()
	if s.ch.Send(wire.Abort{Reason: cause.Error()}, nil) != nil || s.ch.Conn().CloseWrite() != nil {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case ev := <-s.events:
			wire.CloseFds(ev.msg.Fds)
		case <-s.readDone:
			s.ch.Drain() // readEvents ended at the frame that broke the move
			return
		case <-t.C:
			return
		}
	}
}

func (s *link) abort(cause error) {
	s.ch.SetDeadline(time.Now().Add(100 * time.Millisecond))
	_ = s.ch.Send(wire.Abort{Reason: cause.Error()}, nil)
	s.ch.Close()
}
