//go:build linux

package handoff

import (
	"fmt"
	"net"
	"os"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// The new process's inbox: the connections the old one sends, held
// unserved until the outcome of the upgrade is known.

// incoming is a connection received from the old process, not yet served.
// Its goroutine is started as it arrives and waits at the session's gate:
// a goroutine's first stack costs page faults (tens of µs each on some
// VMs) that would otherwise fall into the pause, after COMMIT.
type incoming struct {
	nc  net.Conn
	rec wire.Record // unread bytes and state are filled in by PARKED for early ones
	// c, set by register before the gate opens, serves it: commit
	// happened and FINAL named it. Left nil, it is not served.
	c    *Conn
	gate chan struct{} // the session's gate, or in a Rolling move the connection's own
	// takenUp, set before the gate opens, is called once its handler has
	// taken it up: a Rolling move's acknowledgement, or the count of
	// PhaseResume after an all-at-once COMMIT.
	takenUp func()
}

// inbox is the connections a new process receives, from their fds to the
// gate that lets their handlers go, and the PROGRESS that acknowledges
// them.
type inbox struct {
	reg    *registry
	own    Mode // this process's Options.Mode
	resume func(c *Conn, state []byte)
	ch     *wire.Channel
	mode   Mode                 // the old process's, as PLAN says
	seq    uint32               // CONNS and PARKED frames received
	early  map[uint64]*incoming // fds sent before the park, by id, until claimed
	conns  []*incoming          // parked connections, to serve after COMMIT
	gate   chan struct{}        // closed once the outcome is known; see incoming
}

// canServe refuses n connections if this process cannot serve them.
func (s *inbox) canServe(n uint32) error {
	if n > 0 && !s.own.servesConns() {
		return fmt.Errorf("handoff: %d connections offered but this process is in %s mode", n, s.own)
	}
	if n > 0 && s.resume == nil {
		return fmt.Errorf("handoff: %d connections offered but Options.Resume is not set", n)
	}
	return nil
}

// receiveEarly adopts the connections sent while the old process still
// served them, at most n, until FINAL, which it returns; or, if precopy
// (this process took the pre-copy), until PRECOPY begin, with a zero
// FINAL: then FINAL follows the pre-copy (receiveFinal).
func (s *inbox) receiveEarly(n int, precopy bool) (wire.Final, error) {
	s.early = make(map[uint64]*incoming, n)
	for {
		m, err := s.ch.Recv()
		if err != nil {
			return wire.Final{}, err
		}
		if m.Type == wire.TypeFinal && len(m.Fds) == 0 && !precopy {
			return s.final(m)
		}
		if m.Type == wire.TypePrecopy && len(m.Fds) == 0 && precopy {
			return wire.Final{}, new(wire.Precopy).Expect(m, wire.PrecopyBegin)
		}
		got, err := s.adoptBatch(m)
		for _, a := range got {
			if _, dup := s.early[a.rec.ID]; (dup || len(s.early) == n) && err == nil {
				err = protoErr("early connection %d sent twice, or more than PLAN's %d", a.rec.ID, n)
			}
			if _, dup := s.early[a.rec.ID]; dup {
				s.drop(a)
				continue
			}
			s.early[a.rec.ID] = a // closed with the rest on error
		}
		if err != nil {
			return wire.Final{}, err
		}
		if err := s.progress(); err != nil {
			return wire.Final{}, err
		}
	}
}

// receiveFinal reads FINAL, after a pre-copy.
func (s *inbox) receiveFinal() (wire.Final, error) {
	m, err := s.ch.RecvNoFds()
	if err != nil {
		return wire.Final{}, err
	}
	return s.final(m)
}

func (s *inbox) final(m wire.Msg) (wire.Final, error) {
	var f wire.Final
	if err := m.Expect(&f); err != nil {
		return f, err
	}
	if err := s.canServe(f.Conns); err != nil {
		return f, err
	}
	if f.Late > 0 {
		return f, growFdTable(int(f.Late))
	}
	return f, nil
}

// receiveParked takes the parked connections' unread bytes and state: by
// id for the early ones (PARKED), with their fds for the late ones
// (CONNS). Early connections FINAL does not name were closed by the old
// process since: this process's copy goes too.
func (s *inbox) receiveParked(f wire.Final) error {
	late := 0
	for len(s.conns) < int(f.Conns) {
		m, err := s.ch.Recv()
		if err != nil {
			return err
		}
		var got []*incoming
		if m.Type == wire.TypeParked && len(m.Fds) == 0 {
			got, err = s.claim(m)
		} else {
			got, err = s.adoptBatch(m)
			late += len(got)
		}
		s.conns = append(s.conns, got...)
		if err == nil && (late > int(f.Late) || len(s.conns) > int(f.Conns)) {
			err = protoErr("%d connections (%d late) received, FINAL said %d (%d late)", len(s.conns), late, f.Conns, f.Late)
		}
		if err != nil {
			return err
		}
		if err := s.progress(); err != nil {
			return err
		}
	}
	if s.mode.movesAfterCommit() {
		return nil // the early ones move after COMMIT
	}
	for id, a := range s.early {
		s.drop(a)
		delete(s.early, id)
	}
	return nil
}

// claim matches a PARKED frame's records to early connections.
func (s *inbox) claim(m wire.Msg) ([]*incoming, error) {
	var b wire.Parked
	err := m.Expect(&b)
	recs := b.Records
	if err == nil && (b.Seq != s.seq || len(recs) == 0) {
		err = protoErr("PARKED %d with %d records, expected frame %d", b.Seq, len(recs), s.seq)
	}
	if err != nil {
		return nil, err
	}
	s.seq++
	out := make([]*incoming, 0, len(recs))
	for _, r := range recs {
		a, ok := s.early[r.ID]
		if !ok {
			return out, protoErr("PARKED names connection %d, which was not sent early", r.ID)
		}
		delete(s.early, r.ID)
		a.rec = r
		out = append(out, a)
	}
	return out, nil
}

func (s *inbox) progress() error {
	adopted := len(s.early) + len(s.conns)
	return s.ch.Send(wire.Progress{Seq: s.seq - 1, Held: uint32(adopted)}, nil)
}

// adoptBatch turns one CONNS frame into connections; it owns fds. On
// error, the connections already made are returned for closing with the rest.
func (s *inbox) adoptBatch(m wire.Msg) ([]*incoming, error) {
	var b wire.Conns
	err := m.Expect(&b)
	fds, recs := m.Fds, b.Records
	if err == nil && (b.Seq != s.seq || len(recs) != len(fds) || len(recs) == 0) {
		err = protoErr("CONNS %d with %d records and %d fds, expected frame %d", b.Seq, len(recs), len(fds), s.seq)
	}
	if err != nil {
		wire.CloseFds(fds)
		return nil, err
	}
	s.seq++
	out := make([]*incoming, 0, len(fds))
	for i, fd := range fds {
		nc, err := adoptFd(fd)
		if err != nil {
			wire.CloseFds(fds[i+1:])
			return out, fmt.Errorf("handoff: adopt connection %d: %w", recs[i].ID, err)
		}
		a := &incoming{nc: nc, rec: recs[i], gate: s.gate}
		if s.mode.movesAfterCommit() {
			a.gate = make(chan struct{})
		}
		s.wait(a)
		out = append(out, a)
	}
	return out, nil
}

// wait starts a's goroutine, which serves it once the gate opens, if it
// is to be served.
func (s *inbox) wait(a *incoming) {
	go func() {
		buf := touched(readBufSize)
		waitDeep(a.gate)
		if c := a.c; c != nil {
			c.useBuffer(buf)
			if a.takenUp != nil {
				c.takingUp.Store(&a.takenUp)
			}
			s.resume(c, a.rec.State)
			c.takeUp()
		}
	}()
}

// register tracks connections about to be served, all at once, before
// their gates open (registry.add).
func (s *inbox) register(got []*incoming) {
	cs := make([]*Conn, len(got))
	for i, a := range got {
		cs[i] = s.reg.newConn(a.nc, a.rec.Kind, a.rec.Unread)
		a.c = cs[i]
	}
	s.reg.add(cs...)
}

// touched returns an empty buffer of capacity n whose pages are already
// mapped. A connection's read buffer is made before COMMIT and written to
// once per page: otherwise the kernel takes a page fault for each one at
// its first read after COMMIT (measured: the largest cost of resuming 10k
// connections on our VMs, where a fault costs tens of µs).
func touched(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += pageSize {
		b[i] = 0
	}
	return b[:0]
}

var pageSize = os.Getpagesize()

// waitDeep waits for gate with a stack frame of stackReserve bytes live,
// so that the goroutine's stack has grown (and its pages are mapped)
// before COMMIT, not in the handler's first calls after it; and a GC
// meanwhile does not shrink it, since it is in use.
//
//go:noinline
func waitDeep(gate <-chan struct{}) byte {
	var pad [stackReserve]byte
	pad[0] = 1
	<-gate
	return pad[0] + pad[len(pad)-1]
}

// stackReserve grows a goroutine's first 2 KiB stack to 4 KiB, what a
// handler blocked in Read has in the process that accepted it, with or
// without the race detector's larger stack guard. A 4 KiB frame made the
// stack 8 KiB: 60 MB more than the old process at 15k connections, kept
// after the takeover (TestWaitDeepStack).
const stackReserve = 1536

// openGate lets every adopted connection's goroutine go on: to serve it,
// or to end. Only the session's goroutine calls it.
func (s *inbox) openGate() {
	select {
	case <-s.gate:
	default:
		close(s.gate)
	}
}

// closeConns drops this process's copies of connections it will not serve;
// the old process still holds them, so no peer notices.
func (s *inbox) closeConns() {
	for _, a := range s.conns {
		s.drop(a)
	}
	for _, a := range s.early {
		s.drop(a)
	}
	s.conns, s.early = nil, nil
}

// drop closes this process's copy of a connection it will not serve, and
// ends its goroutine.
func (s *inbox) drop(a *incoming) {
	_ = a.nc.Close()
	if a.gate != s.gate {
		close(a.gate)
	}
}

// closeEarly closes the copies of early connections the old process has
// closed (CLOSED), so that their clients see the close now.
func (s *inbox) closeEarly(m wire.Msg) error {
	var f wire.Closed
	err := m.Expect(&f)
	for _, id := range f.IDs {
		if a, ok := s.early[id]; ok {
			delete(s.early, id)
			s.drop(a)
		}
	}
	return err
}
