//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// childSession is the new process's end of one handoff: its steps up to
// COMMIT, and a Rolling move after it. The connections it receives are its
// inbox.
type childSession struct {
	inbox
	u    *core
	plan plan // the old process's
	ppid int  // the old process
	// greeted is the old process's HELLO when it is a peer (it let this
	// process in through the takeover socket, HELLO done in New): no
	// parent of this one, nor in its process group or PID namespace.
	greeted *greeting
	carried carried
	// precopy: this process took the pre-copy PLAN offered; the bulk of
	// the state comes before FINAL, and LoadChanges replaces LoadState.
	precopy bool
	ready   time.Time // READY sent
	pidTmp  string    // this process's pid, written beside the PID file before READY
}

// takeOver runs the new process's side. Until COMMIT it never reads or
// writes a received connection, so that the old process can resume every
// one of them exactly where it stopped.
func (u *core) takeOver(ctx context.Context) error {
	ctx, run, err := u.m.beginTakeover(ctx)
	if err != nil {
		return err
	}
	s := &childSession{u: u, inbox: inbox{reg: u.reg, own: u.opts.Mode, resume: u.opts.Resume, gate: make(chan struct{})},
		ppid: u.env.getppid(), greeted: u.parent.greeted}
	if s.greeted != nil {
		s.ppid = s.greeted.pid // for the logs: its pid in its own namespace
	}
	err = s.run(ctx)
	next := phaseStopped // a failed takeover: the process must exit
	if err == nil {
		next = phaseServing
		if s.plan.mode.movesAfterCommit() {
			next = phaseReceiving
			u.m.receivingMove()
		}
	}
	if now := u.m.end(run, next, nil); now != phaseServing && now != phaseReceiving {
		u.closeExit()
	}
	if err == nil && next == phaseReceiving {
		go (&arrivals{childSession: s}).receiveMoves()
	}
	return err
}

// run takes the handoff channel and runs the takeover's session until the
// old process's COMMIT. On error nothing was taken over.
func (s *childSession) run(ctx context.Context) (err error) {
	u := s.u
	ctx, cancel := context.WithTimeoutCause(ctx, u.opts.UpgradeTimeout,
		fmt.Errorf("handoff: takeover timed out after %s", u.opts.UpgradeTimeout))
	defer cancel()
	if s.ch, err = u.openChannel(); err != nil {
		return err
	}
	defer func() {
		if err != nil && s.pidTmp != "" {
			_ = os.Remove(s.pidTmp) // never named: the old process serves on
		}
		if err != nil || !s.plan.mode.movesAfterCommit() {
			s.ch.Close() // else a Rolling move goes on using it
		}
	}()
	defer s.openGate()
	unbind := s.ch.BindDeadline(ctx)
	if err := s.receive(ctx); err != nil {
		unbind()
		err = withCause(ctx, err)
		s.closeConns()
		if !errors.Is(err, ErrRejected) && !s.parentGone() {
			s.ch.SetDeadline(time.Now().Add(100 * time.Millisecond))
			_ = s.ch.Send(wire.Abort{Reason: err.Error()}, nil)
		}
		return s.explain(err)
	}
	// READY is sent: the old process decides now, and this one waits for
	// its word whatever its own clock or a stop says.
	unbind()
	s.ch.SetDeadline(time.Time{})
	if err := s.commit(); err != nil {
		return s.explain(err)
	}
	return nil
}

// openChannel takes the handoff channel the old process passed and checks
// that its other end is the parent.
func (u *core) openChannel() (*wire.Channel, error) {
	f := u.parent.takeChannel()
	if f == nil {
		return nil, errors.New("handoff: no handoff channel was passed")
	}
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("handoff: handoff channel: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("handoff: handoff channel is a %T, not a Unix socket", c)
	}
	if u.parent.greeted == nil { // a peer's uid was checked in New
		if err := u.env.checkParent(uc); err != nil {
			uc.Close()
			return nil, err
		}
	}
	return wire.NewChannel(uc), nil
}

// parentGone reports whether the old process has died: this process has
// been re-parented. A peer's death shows only as its channel's end.
func (s *childSession) parentGone() bool {
	return s.greeted == nil && s.u.env.getppid() != s.ppid
}

// awaitParentGone reports whether the old process has died, waiting a
// moment for it when the channel was closed under this process: the kernel
// closes a dying process's files before it re-parents its children, so the
// EOF can come first. A living old process closes the channel only when it
// rolls back, and then it kills this process, so the wait costs nothing.
func (s *childSession) awaitParentGone(err error) bool {
	if s.greeted != nil {
		// A peer that refuses says ABORT before it closes: an end
		// without one is its death.
		return peerClosed(err)
	}
	if !peerClosed(err) {
		return s.parentGone()
	}
	deadline := time.Now().Add(2 * time.Second)
	for !s.parentGone() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// peerClosed reports whether err says the other end of the channel is gone.
func peerClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// explain says what is true when the takeover failed: if the old process
// died, nobody serves the connections any more.
func (s *childSession) explain(err error) error {
	if s.awaitParentGone(err) {
		return fmt.Errorf("handoff: the old process (pid %d) died during the handoff; nothing was taken over: %w", s.ppid, err)
	}
	return fmt.Errorf("%w; the old process (pid %d) carries on", err, s.ppid)
}

// receive runs the handoff up to READY. Before READY it makes the
// takeover's commit: past it, Stop no longer aborts the takeover.
func (s *childSession) receive(ctx context.Context) error {
	if err := s.greet(); err != nil {
		return err
	}
	start := time.Now()
	n, err := s.readPlan()
	if err != nil {
		return err
	}
	f, err := s.receiveEarly(n, s.precopy)
	if err != nil {
		return err
	}
	s.logPhase(PhaseFds, start, "conns", len(s.early))
	if s.precopy {
		start = time.Now()
		loaded, err := s.loadPrecopy()
		if err != nil {
			return err
		}
		s.logPhase(PhasePrecopy, start, "bytes", loaded)
		if f, err = s.receiveFinal(); err != nil {
			return err
		}
	}
	start = time.Now()
	if err := s.receiveParked(f); err != nil {
		return err
	}
	s.logPhase(PhaseParked, start, "conns", len(s.conns), "late", f.Late)
	start = time.Now()
	stateBytes, err := s.loadState()
	if err != nil {
		return err
	}
	if err := s.receiveCarry(); err != nil {
		return err
	}
	s.logPhase(PhaseState, start, "bytes", stateBytes, "generation", s.carried.generation+1)
	if s.pidTmp, err = s.u.pid.prepare(); err != nil {
		return err
	}
	if err := s.u.m.commit(ctx, 0); err != nil {
		return err
	}
	s.ready = time.Now()
	return s.ch.Send(wire.Ready{Conns: uint32(len(s.conns)), StateBytes: stateBytes}, nil)
}

// phase logs a step of the takeover as it ends.
func (s *childSession) logPhase(name string, start time.Time, args ...any) {
	args = append([]any{"phase", name, "from", s.ppid, "took", time.Since(start)}, args...)
	s.u.log.Info("handoff: takeover phase", args...)
}

// greet exchanges HELLOs with the old process; a peer's were in New.
func (s *childSession) greet() error {
	if h := s.greeted; h != nil {
		s.u.log.Info("handoff: taking over from a peer", "from", h.pid, "from_version", h.version, "from_app", h.app)
		return nil
	}
	if err := s.ch.Send(ownHello(s.u.opts), nil); err != nil {
		return err
	}
	var h wire.Hello
	if err := s.ch.Expect(&h); err != nil {
		return fmt.Errorf("handoff: waiting for HELLO: %w", err)
	}
	if h.Version != protocolVersion {
		return protoErr("old process speaks protocol version %d, this one %d", h.Version, protocolVersion)
	}
	s.u.log.Info("handoff: taking over", "from", h.PID, "from_version", h.AppVersion, "from_app", h.App)
	return nil
}

// readPlan reads the old process's plan: its mode, and how many
// connections may come early; it makes room for them.
func (s *childSession) readPlan() (int, error) {
	var f wire.Plan
	err := s.ch.Expect(&f)
	if err == nil {
		s.plan, err = planOf(f)
		s.mode = s.plan.mode
	}
	if err != nil {
		return 0, err
	}
	if err := s.canServe(s.plan.early); err != nil {
		return 0, err
	}
	if err := s.canLoad(s.plan.state); err != nil {
		return 0, err
	}
	if err := s.answerPrecopy(); err != nil {
		return 0, err
	}
	s.u.log.Info("handoff: plan", "mode", s.plan.mode, "early", s.plan.early, "state", s.plan.state,
		"precopy", s.precopy)
	prefault(int(s.plan.early))
	return int(s.plan.early), growFdTable(int(s.plan.early))
}

// canLoad refuses the old process's state if this process cannot load
// it: taken over without it, the service would go on with its state lost.
func (s *childSession) canLoad(state bool) error {
	if !state {
		return nil
	}
	if !s.u.opts.Mode.loadsState() {
		return fmt.Errorf("handoff: the old process sends its state but this process is in %s mode and cannot load it", s.u.opts.Mode)
	}
	if s.u.opts.LoadState == nil {
		return errors.New("handoff: the old process sends its state but Options.LoadState is not set: it would be lost")
	}
	return nil
}

// answerPrecopy answers a PLAN that offers a pre-copy: this process takes
// it if it has Options.Precopy, and declines it otherwise, so that the
// old process sends its whole state in the pause, for LoadState, as it
// would without a pre-copy.
func (s *childSession) answerPrecopy() error {
	if !s.plan.precopy {
		return nil
	}
	step := wire.PrecopyDecline
	if s.u.opts.Precopy != nil {
		step, s.precopy = wire.PrecopyTake, true
	}
	return s.ch.Send(wire.Precopy{Step: step}, nil)
}

// loadPrecopy hands the pre-copy's state stream to Precopy.Load, checks it
// whole and tells the old process it is loaded: it parks nothing before.
func (s *childSession) loadPrecopy() (uint64, error) {
	r := wire.NewStateReader(s.ch)
	load := s.u.opts.Precopy.Load
	if err := callSafely("pre-copy load", func() error { return load(r) }); err != nil {
		return 0, err
	}
	if err := r.Drain(); err != nil {
		return 0, err
	}
	return r.Total(), s.ch.Send(wire.Precopy{Step: wire.PrecopyLoaded}, nil)
}

// loadState hands the state stream to the application and checks it whole.
// A stream PLAN did not announce must be empty: one it announced has
// passed canLoad.
func (s *childSession) loadState() (uint64, error) {
	r := wire.NewStateReader(s.ch)
	load, what := s.u.opts.LoadState, "load state"
	if s.precopy {
		load, what = s.u.opts.Precopy.LoadChanges, "load changes"
	}
	if load != nil && s.u.opts.Mode.loadsState() {
		if err := callSafely(what, func() error { return load(r) }); err != nil {
			return 0, err
		}
	}
	if err := r.Drain(); err != nil {
		return 0, err
	}
	if !s.plan.state && r.Total() > 0 {
		return 0, protoErr("%d bytes of state after a PLAN that announced none", r.Total())
	}
	return r.Total(), nil
}

// receiveCarry reads where the chain stands and the carried values; they
// count once COMMIT comes.
func (s *childSession) receiveCarry() error {
	var f wire.Carry
	err := s.ch.Expect(&f)
	s.carried = carriedOf(f)
	return err
}

// commit waits for the old process's word. COMMIT makes this process the
// owner of everything: it puts its PID file in place, joins the old process's
// process group and starts serving. ABORT, or the old process's death,
// means it never will.
func (s *childSession) commit() error {
	m, err := s.ch.RecvNoFds()
	if err == nil {
		err = m.ExpectType(wire.TypeCommit)
	}
	if err != nil {
		s.closeConns()
		return fmt.Errorf("handoff: waiting for COMMIT: %w", err)
	}
	// COMMIT is the decision: a payload this process cannot read costs
	// it the record of how it started, nothing more.
	var f wire.Commit
	if err := m.Expect(&f); err == nil {
		s.u.m.tookOver(commitInfoOf(f).result(s.u.opts.Binary, s.ppid, s.u.env.getpid(), s.plan.mode))
	} else {
		s.u.log.Warn("handoff: COMMIT's upgrade record unreadable", "err", err)
	}
	if err := s.u.chain.adopt(s.carried, len(s.conns)); err != nil {
		s.u.log.Error("handoff: a carried value is lost", "err", err)
	}
	s.timeResume()
	s.openGate()
	s.u.log.Info("handoff: took over", "from", s.ppid, "conns", len(s.conns), "generation", s.u.generation(),
		"waited", time.Since(s.ready))
	if err := s.u.pid.install(s.pidTmp); err != nil {
		s.u.log.Error("handoff: took over, but", "err", err)
	}
	if s.greeted == nil {
		if err := s.u.env.joinGroup(s.ppid); err != nil {
			s.u.log.Warn("handoff: could not join the old process's process group", "err", err)
		}
	}
	// The supervisor hears that this process serves before the old one
	// may exit; whoever asked the old process for this upgrade, once the
	// PID file names this process.
	s.u.m.serves(s.ppid)
	s.ch.SetDeadline(time.Now().Add(time.Second))
	_ = s.ch.Send(wire.Serving{}, nil)
	return nil
}

// timeResume registers every parked connection to be served and, unless
// they move one by one after COMMIT, logs PhaseResume once every handler
// has taken its connection up.
func (s *childSession) timeResume() {
	var taken sync.WaitGroup
	rolling := s.mode.movesAfterCommit()
	start, n := time.Now(), len(s.conns)
	s.register(s.conns)
	for _, a := range s.conns {
		if !rolling {
			taken.Add(1)
			a.takenUp = taken.Done
		}
	}
	if rolling || len(s.conns) == 0 {
		return
	}
	go func() {
		taken.Wait()
		s.logPhase(PhaseResume, start, "conns", n)
	}()
}

// arrivals is a new process's side of a Rolling move, after COMMIT: the
// session goes on receiving, and each connection that arrives is resumed
// at once.
type arrivals struct {
	*childSession
	taking sync.WaitGroup // connections moved here whose handlers have not taken them up
}

// receiveMoves runs a Rolling move in the new process, which serves
// already: each connection the old process sends is resumed at once. It
// ends at END, when the early copies never claimed are closed, or when the
// channel fails: then the old process has died (or will take its
// connections back), and those copies are closed too.
func (s *arrivals) receiveMoves() {
	defer s.endMoves()
	s.ch.SetDeadline(time.Time{}) // the move lasts as long as the old process says
	start, moved := time.Now(), 0
	for {
		m, err := s.ch.Recv()
		if err != nil {
			s.u.log.Error("handoff: the rolling move ended early; the old process keeps what it has", "from", s.ppid,
				"moved", moved, "err", err)
			return
		}
		var got []*incoming
		switch m.Type {
		case wire.TypeParked:
			got, err = s.claim(m)
		case wire.TypeConns:
			got, err = s.adoptBatch(m)
		case wire.TypeClosed:
			err = s.closeEarly(m)
		case wire.TypeEnd:
			s.logEnd(m, start, moved)
			return
		default:
			wire.CloseFds(m.Fds)
			err = protoErr("unexpected %s during the move", m.Type)
		}
		s.register(got)
		for _, a := range got {
			s.taking.Add(1)
			a.takenUp = s.taking.Done
			close(a.gate)
		}
		moved += len(got)
		s.u.movedIn(len(got))
		if err == nil && got != nil {
			err = s.progress()
		}
		if err != nil {
			s.u.log.Error("handoff: rolling move failed", "from", s.ppid, "moved", moved, "err", err)
			return
		}
	}
}

func (s *arrivals) logEnd(m wire.Msg, start time.Time, moved int) {
	var e wire.End
	if err := m.Expect(&e); err != nil {
		s.u.log.Warn("handoff: END unreadable", "err", err)
	}
	s.u.m.moveDone(time.Since(start), int(e.Stayed), int(e.Closed))
	s.u.log.Info("handoff: rolling move done", "from", s.ppid, "moved", moved, PhaseMove, time.Since(start),
		"stayed_with_old", e.Stayed, "closed", e.Closed)
}

// endMoves closes the early copies never claimed and the channel, waits
// until the moved connections' handlers have taken them up, and lets this
// process start upgrades of its own.
func (s *arrivals) endMoves() {
	for id, a := range s.early {
		s.drop(a)
		delete(s.early, id)
	}
	s.ch.Close()
	s.awaitTakenUp()
	s.u.m.moveReceived()
}

// awaitTakenUp waits until the handler of every connection moved here has
// taken it up (Options.Resume): before that it may not have applied what
// the connection carried, and a stop, which waits for the move to end,
// would save a state without it. A handler that has not done so within
// Options.MoveTimeout is not waited for any longer, with a warning.
func (s *arrivals) awaitTakenUp() {
	done := make(chan struct{})
	go func() {
		s.taking.Wait()
		close(done)
	}()
	t := time.NewTimer(s.u.opts.MoveTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.u.log.Warn("handoff: handlers of moved connections have not taken them up (Options.Resume); "+
			"the move ends without them, and a stop now may save a state without what they carry",
			"waited", s.u.opts.MoveTimeout)
	}
}
