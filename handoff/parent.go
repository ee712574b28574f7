//go:build linux

package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// upgrade runs the old process's side of an upgrade: start the new
// process, hand it everything, and commit or roll back. Until it commits,
// nothing this process holds changes hands: on any failure the new process
// is killed (and reaped) before a single connection resumes here.
func (u *core) upgrade(ctx context.Context, run *attempt, req UpgradeRequest, res *UpgradeResult) error {
	began := time.Now()
	ctx, cancel := context.WithTimeoutCause(ctx, req.Timeout,
		fmt.Errorf("handoff: upgrade %w after %s", errTimeout, req.Timeout))
	defer cancel()
	if f := u.opts.BeforeUpgrade; f != nil {
		if err := callSafely("BeforeUpgrade", f); err != nil {
			return fmt.Errorf("%w: %w", errNotNow, err)
		}
	}
	hello := helloLater(u.opts)
	defer hello() // its count's fd closed before the upgrade returns
	p, conn, err := startNext(u.env, req, u.dir, u.passedListeners())
	if err != nil {
		return err
	}
	res.To = p.pid
	u.event(req, Event{Phase: PhaseStarted, PID: p.pid, Took: time.Since(began)})
	s := &parentSession{link: link{ch: wire.NewChannel(conn)}, u: u, pid: p.pid, began: began, req: req,
		toPeer: req.peer != nil, ownHello: hello}
	defer func() { res.Stats, res.StateBytes = s.stats, s.stateBytes }()
	h := &handing{u: u, s: s, p: p}
	return h.run(ctx, run.stopC)
}

// startNext starts the new process; a peer that asked through the
// takeover socket has started on its own, and this process can neither
// see its exit nor kill it: the channel is all it has of it.
func startNext(e *env, req UpgradeRequest, dir string, lns []handedListener) (*newProcess, *net.UnixConn, error) {
	if req.peer != nil {
		return &newProcess{pid: req.peer.pid}, req.peer.conn, nil
	}
	return e.start(req.Binary, dir, lns)
}

// handing is the old process's side of one upgrade once its new process
// has started: the session with it, the process itself, and what ends
// the upgrade: the commit and the handover (or a Rolling move, move.go),
// or the rollback.
type handing struct {
	u *core
	s *parentSession
	p *newProcess
}

// run takes an upgrade from its new process's start to its end: the
// handoff up to READY, the commit, and the handover, the Rolling move
// (stop closed hurries it) or the rollback.
func (h *handing) run(ctx context.Context, stop <-chan struct{}) error {
	u, s, p := h.u, h.s, h.p
	// The new process's exit ends the wait at once, even if something it
	// started still holds its end of the channel.
	ctx, exitCancel := context.WithCancelCause(ctx)
	defer exitCancel(nil)
	if p.exited != nil { // a peer's exit shows as the channel's end only
		stopWatch := context.AfterFunc(contextOf(p.exited), func() { exitCancel(p.describe()) })
		defer stopWatch()
	}
	parked, err := s.run(ctx)
	if err == nil {
		err = h.commitTo(ctx)
	}
	if err != nil {
		return h.rollBack(ctx, err)
	}
	if u.opts.Mode.movesAfterCommit() {
		return h.roll(stop)
	}
	s.sendCommit()
	h.handOver(parked)
	s.awaitServing(5 * time.Second)
	s.ch.Close()
	return nil
}

// awaitServing waits, up to d, for the new process to say that it serves
// and its PID file names it, so that when Upgrade returns (and handoffctl
// exits) the PID file is already right. The upgrade has committed either
// way.
func (s *parentSession) awaitServing(d time.Duration) {
	if err := s.serving(d); err != nil {
		s.u.log.Warn("handoff: the new process did not say it serves", "to", s.pid, "err", err)
	}
}

// contextOf returns a context that ends when done is closed.
func contextOf(done <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-done
		cancel()
	}()
	return ctx
}

// commitTo is the single commit point of an upgrade, after the new
// process's READY: from here on this process never resumes a connection,
// and a stop signal is passed on to the new process.
func (h *handing) commitTo(ctx context.Context) error {
	u, pid := h.u, h.p.pid
	if h.s.toPeer {
		// A peer is nobody this process may signal: a stop sent here
		// (the kubelet's to this container) is this process's own.
		return u.m.commit(ctx, 0)
	}
	if err := u.m.commit(ctx, pid); err != nil {
		return err
	}
	if u.opts.Mode.passesStop() {
		u.watchStops()
	}
	return nil
}

// rollBack ends a failed upgrade: the new process is told why, killed with
// its process group and reaped, then every connection resumes here. A
// peer is told why and not killed: it never touched a connection (the
// protocol forbids it before COMMIT), and it exits by itself. It returns
// the reason, see failure.
func (h *handing) rollBack(ctx context.Context, err error) error {
	u, s, p := h.u, h.s, h.p
	err = withCause(ctx, err)
	if !errors.Is(err, ErrRejected) {
		if rej := s.rejection(100 * time.Millisecond); rej != nil {
			err = fmt.Errorf("%w (%v)", rej, err)
		}
	}
	// Did it end on its own? Asked before the abort, which makes it exit:
	// an exit that follows this process's own refusal is not the cause.
	ended := p.describe()
	var kerr error
	if ended == nil && peerGone(err) {
		// Its end of the channel is closed, typically by its exit: no
		// ABORT reaches it, so how it ends is its own doing, unless it
		// is still alive for kill to end.
		kerr = p.kill()
		ended = p.ownEnd()
		if s.toPeer {
			// A peer's channel is all this process sees of it: ended
			// without ABORT, the peer is gone (it says ABORT before it
			// closes on purpose).
			ended = fmt.Errorf("%w: the peer's channel ended without ABORT", errExited)
		}
	}
	s.abort(err)
	if kerr == nil {
		kerr = p.kill()
	}
	if kerr != nil {
		u.log.Error("handoff: rollback", "err", kerr)
	}
	u.pid.discard(p.pid)
	u.reg.resumeAll()
	switch {
	case ended == nil || strings.Contains(err.Error(), ended.Error()):
	case errors.Is(err, ErrRejected):
		// It refused, then exited as a refusing process does: the
		// refusal is the cause, even when its exit broke a send here
		// first (a Load that fails while the state still streams).
		err = fmt.Errorf("%w (then %v)", err, ended)
	default:
		err = fmt.Errorf("%w (%w)", ended, err) // the cause first, then what it did here
	}
	return err
}

// peerGone reports whether err says the new process's end of the channel
// is closed.
func peerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// handOver ends a committed upgrade: every parked connection now belongs
// to the new process, which this process closes its copies for (close(2)
// only, never shutdown(2), so no FIN reaches a client); or with
// ListenersOnly mode, this process stops accepting and keeps its connections.
func (h *handing) handOver(parked []parkedConn) {
	u, s := h.u, h.s
	keepSocketFiles(u.reg.listenerList())
	defer u.releasePlain(s.toPeer)
	if u.opts.Mode.keepsConns() {
		kept := u.reg.releaseListeners()
		u.log.Info("handoff: handed over the listeners; connections stay", "to", s.pid, "conns_kept", kept,
			PhaseConnected, s.stats.Connected, PhaseReady, s.stats.Ready, PhaseCommit, s.stats.Commit)
		return
	}
	released := time.Now()
	kept, _ := u.reg.handover(parked) // the copies close meanwhile, or at the exit
	s.stats.Release = time.Since(released)
	if kept > 0 {
		u.log.Warn("handoff: connections made after the park stay with this process", "conns", kept)
	}
	attrs := []any{"to", s.pid, "conns", s.stats.Conns, "early", s.stats.Early,
		PhaseConnected, s.stats.Connected, PhaseFds, s.stats.Fds}
	if s.stats.Precopy > 0 { // only when the new process took a pre-copy
		attrs = append(attrs, PhasePrecopy, s.stats.Precopy, "precopy_bytes", s.stats.PrecopyBytes)
	}
	attrs = append(attrs, PhasePark, s.stats.Park, PhaseParked, s.stats.Parked,
		PhaseState, s.stats.State, PhaseReady, s.stats.Ready,
		PhaseCommit, s.stats.Commit, PhasePause, s.stats.Pause(), PhaseRelease, s.stats.Release)
	u.log.Info("handoff: handed over", attrs...)
}

// parentSession is the old process's end of one handoff: what it sends
// when, and the upgrade's timings. The channel's traffic is its link.
type parentSession struct {
	link
	u          *core
	pid        int
	peer       wire.Hello
	early      map[uint64]bool // connections whose fds went before the park
	stats      UpgradeStats
	began      time.Time // the upgrade's start
	ready      time.Time // READY arrived
	req        UpgradeRequest
	stateBytes uint64 // state received, as READY says
	toPeer     bool   // the new process came through the takeover socket
	ownHello   func() wire.Hello
	// precopy: the new process took the pre-copy PLAN offered, so the
	// bulk of the state goes before the park and SaveChanges replaces
	// SaveState in it.
	precopy bool
}

// run takes the handoff up to the new process's READY and returns the
// connections it parked. The connections are paused from the park on,
// which PauseTimeout bounds.
func (s *parentSession) run(ctx context.Context) (parked []parkedConn, err error) {
	defer s.ch.BindDeadline(ctx)()
	if err := s.hello(); err != nil {
		return nil, err
	}
	if s.toPeer {
		if err := sendListeners(s.ch, withoutControl(s.u.passedListeners(), s.u.opts.ControlSocket)); err != nil {
			return nil, err
		}
	}
	s.stats.Connected = time.Since(s.began)
	s.emit(Event{Phase: PhaseConnected, Took: s.stats.Connected})
	s.events, s.readDone = make(chan frameEvent, sendWindow+4), make(chan struct{})
	go s.readEvents()
	early, err := s.sendEarly()
	if err != nil {
		return nil, err
	}
	s.early = early
	s.emit(Event{Phase: PhaseFds, Took: s.stats.Fds, Conns: s.stats.Early})
	if s.precopy {
		if err := s.sendPrecopy(); err != nil {
			return nil, err
		}
		s.emit(Event{Phase: PhasePrecopy, Took: s.stats.Precopy, Bytes: s.stats.PrecopyBytes})
	}
	pause := s.u.opts.PauseTimeout
	ctx, cancel := context.WithTimeoutCause(ctx, pause,
		fmt.Errorf("handoff: %w: longer than the pause timeout (%s)", errPauseTimeout, pause))
	defer cancel()
	defer s.ch.BindDeadline(ctx)()
	defer func() { err = withCause(ctx, err) }()
	parked, err = s.park(ctx, early)
	if err != nil {
		return nil, err
	}
	s.emit(Event{Phase: PhasePark, Took: s.stats.Park, Conns: s.stats.Conns})
	steps := []func() error{
		func() error { return s.sendParked(parked, early) },
		s.sendState,
		s.sendCarry,
		s.awaitReady,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return parked, nil
}

// sendCommit tells the new process that it owns everything now. The
// decision is made already: if the new process cannot hear it, it has
// died, as it could have a moment later.
//
// COMMIT carries the upgrade's phases as this process timed them, so that
// the process that goes on serving knows how it started.
func (s *parentSession) sendCommit() {
	s.ch.SetDeadline(time.Now().Add(5 * time.Second))
	s.stats.Commit = time.Since(s.ready)
	p := commitInfo{began: s.began, stats: s.stats, stateBytes: s.stateBytes}.frame()
	if err := s.ch.Send(p, nil); err != nil {
		s.u.log.Error("handoff: COMMIT not delivered; the new process owns the connections", "to", s.pid, "err", err)
	}
}

func (s *parentSession) hello() error {
	if err := s.ch.Expect(&s.peer); err != nil {
		return fmt.Errorf("handoff: waiting for HELLO from pid %d: %w", s.pid, err)
	}
	if s.peer.Version != protocolVersion {
		return protoErr("new process speaks protocol version %d, this one %d", s.peer.Version, protocolVersion)
	}
	s.u.log.Info("handoff: new process connected", "child", s.pid, "version", s.peer.AppVersion, "app", s.peer.App)
	if err := s.checkApp(); err != nil {
		return err
	}
	return s.ch.Send(s.ownHello(), nil)
}

// helloLater makes this process's HELLO on a goroutine of its own, while
// the new process starts: the count of fds open reads /proc/self/fd, 78
// ms with 15k connections on a loaded machine (bench/README.md), which
// was most of the wait between the new process's HELLO and this one's.
// The function returned waits for it, as often as it is called.
func helloLater(opts Options) func() wire.Hello {
	c := make(chan wire.Hello, 1)
	go func() { c <- ownHello(opts) }()
	return sync.OnceValue(func() wire.Hello { return <-c })
}

// checkApp refuses a new process of another application than the one the
// upgrade expects: this process's own (Options.App), unless the operator
// named another for this upgrade (UpgradeRequest.App). The check is made
// here, in the old process, because the operator's word reaches this
// process and it alone decides the commit.
func (s *parentSession) checkApp() error {
	got, want, own := s.peer.App, s.req.App, s.u.opts.App
	switch {
	case got == want:
		return nil
	case want != own:
		return fmt.Errorf("handoff: %w: it is %q, the upgrade expected %q (this process is %q)",
			errOtherApp, got, want, own)
	}
	return fmt.Errorf("handoff: %w: it is %q, this process is %q; if the switch is intended, "+
		"name the new application for this upgrade (handoffctl upgrade -app %s, or UpgradeRequest.App)",
		errOtherApp, got, own, got)
}

// sendEarly sends the fd of every live connection while this process
// still serves them all: the new process turns each into a connection (the
// slow part, shared/LIMITS.md) outside the pause. Which bytes are unread
// and the handlers' state wait for the park. It returns the ids sent. In
// ListenersOnly mode it sends a PLAN of no connections and nothing else.
func (s *parentSession) sendEarly() (map[uint64]bool, error) {
	if !s.u.opts.Mode.sendsEarlyFds() {
		return nil, s.ch.Send(s.plan(0).frame(), nil)
	}
	start := time.Now()
	conns := s.u.reg.live()
	if err := s.checkRoom(len(conns)); err != nil {
		return nil, err
	}
	plan := s.plan(len(conns))
	if err := s.ch.Send(plan.frame(), nil); err != nil {
		return nil, err
	}
	if plan.precopy {
		if err := s.awaitPrecopyAnswer(); err != nil {
			return nil, err
		}
	}
	sent := make(map[uint64]bool, len(conns))
	for len(conns) > 0 {
		n := min(len(conns), wire.MaxFdsPerMsg)
		if err := s.sendEarlyBatch(conns[:n], sent); err != nil {
			return nil, err
		}
		conns = conns[n:]
	}
	// Every early connection adopted before parking: none of that work
	// may fall into the pause.
	err := s.waitAcked(s.seq, 0)
	s.stats.Fds, s.stats.Early = time.Since(start), len(sent)
	return sent, err
}

// plan is this upgrade's PLAN, with early connections sent early.
func (s *parentSession) plan(early int) plan {
	mode := s.u.opts.Mode
	state := s.u.opts.SaveState != nil && mode.sendsState()
	return plan{mode: mode, early: uint32(early), state: state,
		precopy: state && s.u.opts.Precopy != nil && mode.precopies()}
}

// awaitPrecopyAnswer reads the new process's answer to a PLAN that
// offers a pre-copy, its first frame after PLAN: it takes it or declines
// it (then the upgrade goes on as without one). A new process of a
// release before the pre-copy refuses the PLAN with ABORT: the upgrade
// rolls back.
func (s *parentSession) awaitPrecopyAnswer() error {
	m, err := s.next()
	if err != nil {
		return fmt.Errorf("handoff: waiting for the answer to the pre-copy: %w", err)
	}
	var p wire.Precopy
	if err := m.Expect(&p); err != nil {
		return err
	}
	switch p.Step {
	case wire.PrecopyTake:
		s.precopy = true
	case wire.PrecopyDecline:
		s.u.log.Info("handoff: the new process declined the pre-copy; the whole state goes in the pause", "to", s.pid)
	default:
		return protoErr("PRECOPY says %s in answer to PLAN", p.Step)
	}
	return nil
}

// sendPrecopy sends the bulk of the state while every connection is
// still served (Precopy.Save), and waits until the new process has loaded
// it (Precopy.Load): nothing parks before, so that the pause never holds
// the load.
func (s *parentSession) sendPrecopy() error {
	start := time.Now()
	if err := s.ch.Send(wire.Precopy{Step: wire.PrecopyBegin}, nil); err != nil {
		return err
	}
	w := wire.NewStateWriter(s.ch)
	save := s.u.opts.Precopy.Save
	if err := callSafely("pre-copy save", func() error { return save(w) }); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	s.stats.PrecopyBytes = w.Total()
	m, err := s.next()
	if err != nil {
		return fmt.Errorf("handoff: waiting for the pre-copy's load: %w", err)
	}
	if err := new(wire.Precopy).Expect(m, wire.PrecopyLoaded); err != nil {
		return err
	}
	s.stats.Precopy = time.Since(start)
	return nil
}

// checkRoom checks that the child can hold n more fds than it has now.
func (s *parentSession) checkRoom(n int) error {
	if need := n + int(s.peer.FdOpen) + fdHeadroom; need > int(s.peer.FdLimit) {
		return fmt.Errorf("handoff: new process can hold %d fds, needs %d for %d connections",
			s.peer.FdLimit, need, n)
	}
	return nil
}

// park parks every connection and sends FINAL: how many parked
// connections follow, and how many of them bring their fd now (accepted
// after the early fds went). Unless the mode parks every connection before
// READY, nothing is parked: FINAL 0.
func (s *parentSession) park(ctx context.Context, early map[uint64]bool) ([]parkedConn, error) {
	if !s.u.opts.Mode.parksBeforeReady() {
		return nil, s.ch.Send(wire.Final{}, nil)
	}
	start := time.Now()
	d := s.u.opts.ParkTimeout
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pctx, stop := context.WithTimeoutCause(pctx, d, fmt.Errorf("%w (%s)", errParkTimeout, d))
	defer stop()
	// The new process's channel ending ends the park at once: a peer's
	// death shows only there (an exec'd child's exit is watched too).
	unwatch := context.AfterFunc(contextOf(s.readDone), func() { cancel(errChannelEnded) })
	defer unwatch()
	parked, err := s.u.reg.parkAll(pctx)
	if errors.Is(err, errChannelEnded) {
		err = s.whyEnded()
	}
	if err != nil {
		return nil, fmt.Errorf("handoff: park: %w", err)
	}
	s.stats.Park, s.stats.Conns = time.Since(start), len(parked)
	late := 0
	for _, p := range parked {
		if !early[p.c.id] {
			late++
		}
	}
	if err := s.checkRoom(len(early) + late); err != nil {
		return nil, err
	}
	return parked, s.ch.Send(wire.Final{Conns: uint32(len(parked)), Late: uint32(late)}, nil)
}

// sendParked sends every parked connection's unread bytes and state: in
// PARKED frames, by id, for those whose fd went early; in CONNS frames,
// fds attached, for the late ones.
func (s *parentSession) sendParked(parked []parkedConn, early map[uint64]bool) error {
	start := time.Now()
	var known, late []parkedConn
	for _, p := range parked {
		if early[p.c.id] {
			known = append(known, p)
		} else {
			late = append(late, p)
		}
	}
	if err := s.sendRecords(wire.TypeParked, known, nil); err != nil {
		return err
	}
	if err := s.sendRecords(wire.TypeConns, late, nil); err != nil {
		return err
	}
	// No wait for their PROGRESS: the state follows at once, and READY
	// says the child has them all.
	s.stats.Parked = time.Since(start)
	s.emit(Event{Phase: PhaseParked, Took: s.stats.Parked, Conns: len(parked)})
	return nil
}

func (s *parentSession) sendState() error {
	start := time.Now()
	w := wire.NewStateWriter(s.ch)
	save, what := s.u.opts.SaveState, "save state"
	if s.precopy {
		save, what = s.u.opts.Precopy.SaveChanges, "save changes"
	}
	if save != nil && s.u.opts.Mode.sendsState() {
		if err := callSafely(what, func() error { return save(w) }); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	s.stats.State = time.Since(start)
	return nil
}

// sendCarry sends where the chain stands, its totals and the
// application's carried values, read now that every connection is parked.
func (s *parentSession) sendCarry() error {
	v, err := s.u.chain.snapshot()
	if err != nil {
		return err
	}
	return s.ch.Send(v.frame(), nil)
}

// emit reports a phase of the upgrade.
func (s *parentSession) emit(e Event) {
	e.PID = s.pid
	s.u.event(s.req, e)
}

func (s *parentSession) awaitReady() error {
	start := time.Now()
	m, err := s.next()
	if err != nil {
		return fmt.Errorf("handoff: waiting for READY: %w", err)
	}
	var r wire.Ready
	if err := m.Expect(&r); err != nil {
		return err
	}
	if int(r.Conns) != s.stats.Conns {
		return protoErr("new process adopted %d connections, %d were sent", r.Conns, s.stats.Conns)
	}
	s.ready = time.Now()
	s.stats.Ready = s.ready.Sub(start)
	s.stateBytes = r.StateBytes
	s.emit(Event{Phase: PhaseState, Took: s.stats.State, Bytes: s.stateBytes})
	s.emit(Event{Phase: PhaseReady, Took: s.stats.Ready, Conns: int(r.Conns)})
	return nil
}

// roll ends a Rolling upgrade from its commit point: this process stops
// accepting, tells the new process it serves now, and moves every
// connection to it. If the new process fails before the last one has
// moved, this process takes everything back (takeBack). A stop (stop
// closed) hurries the move, see mover.hurry.
func (h *handing) roll(stop <-chan struct{}) error {
	u, s, p := h.u, h.s, h.p
	moving := u.reg.startMove(s.early)
	s.sendCommit()
	start := time.Now()
	m := &mover{link: &s.link, log: u.log, peer: s.peer, early: s.early, reg: moving, exited: p.exited, stop: stop, grace: u.opts.ParkTimeout,
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
	if err != nil && s.toPeer && !peerGone(err) {
		return h.leaveToPeer(m, err)
	}
	if err != nil {
		return h.takeBack(m, err)
	}
	moving.endMove()
	u.releasePlain(s.toPeer)
	s.ch.Close()
	s.emit(Event{Phase: PhaseMove, Took: s.stats.Move, Conns: m.moved})
	u.log.Info("handoff: rolling move done", "to", s.pid, "moved", m.moved, "early", s.stats.Early,
		"stayed", stayed, "closed", closed, PhaseMove, s.stats.Move, "max_wait", m.maxWait)
	return nil
}

// leaveToPeer ends a Rolling move to a peer that is alive but broke it
// (a frame out of place, a timeout): a peer cannot be killed, and taking
// the listeners back would have two processes accepting. The peer keeps
// what moved and the listeners; this process keeps what it still has
// (parked ones resume here, the others are left to Stragglers), accepts
// no more and exits once they are done, as after a move's deadline. The
// upgrade stays committed.
func (h *handing) leaveToPeer(m *mover, err error) error {
	u, s := h.u, h.s
	s.abortAfterPeer(err, u.opts.ParkTimeout)
	parked, stayed, closed := m.reg.stopMove(u.opts.Stragglers == CloseStragglers)
	for _, p := range parked {
		p.c.finish(nil)
	}
	m.reg.endMove()
	u.releasePlain(s.toPeer)
	s.stats.Stayed, s.stats.Closed = stayed+len(parked), closed
	u.log.Error("handoff: the rolling move to the peer broke; the peer serves what moved and the listeners, "+
		"this process what it still has", "err", err, "moved", m.moved, "stayed", stayed+len(parked), "closed", closed)
	return nil
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
	kept, _, _ := m.reg.remaining()
	if perr := u.pid.write(); perr != nil {
		u.log.Error("handoff: took the service back, but", "err", perr)
	}
	u.m.serves(0)
	return fmt.Errorf("handoff: the new process (pid %d) failed during the rolling move: %w; "+
		"this process took the listeners back and serves the %d connections it still had; "+
		"the %d that had moved were lost with it", p.pid, err, kept, m.moved)
}
