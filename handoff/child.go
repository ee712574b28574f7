//go:build linux

package handoff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// testHook, when set by a test, is called at the steps of a handoff that
// no effect on the OS (env) or the application is near: in the new
// process "hello" and "first-batch", in the old one "early" and
// "decide"; so that a test of real processes can make one fail or wait
// exactly there.
var testHook func(step string)

func hook(step string) {
	if testHook != nil {
		testHook(step)
	}
}

// adopted is a connection received from the old process, not yet served.
// Its goroutine is started as it arrives and waits at the session's gate:
// a goroutine's first stack costs page faults (tens of µs each on some
// VMs) that would otherwise fall into the pause, after COMMIT.
type adopted struct {
	nc    net.Conn
	rec   record        // unread bytes and state are filled in by PARKED for early ones
	serve bool          // set before the gate opens: commit happened and FINAL named it
	gate  chan struct{} // the session's gate, or in a Rolling move the connection's own
	// takenUp, set before the gate opens for a connection that a Rolling
	// move brought, is called once its handler has taken it up.
	takenUp func()
}

// childSession is the new process's end of one handoff.
type childSession struct {
	u       *Upgrader
	ch      *channel
	ppid    int  // the old process
	plan    plan // the old process's
	carried carried
	ready   time.Time           // READY sent
	seq     uint32              // CONNS and PARKED frames received
	early   map[uint64]*adopted // fds sent before the park, by id, until claimed
	conns   []*adopted          // parked connections, to serve after COMMIT
	gate    chan struct{}       // closed once the outcome is known; see adopted
	pidTmp  string              // this process's pid, written beside the PID file before READY
	taking  sync.WaitGroup      // connections moved here whose handlers have not taken them up
}

// takeOver runs the new process's side. Until COMMIT it never reads or
// writes a received connection, so that the old process can resume every
// one of them exactly where it stopped.
func (u *Upgrader) takeOver(ctx context.Context) error {
	ctx, run, err := u.beginTakeover(ctx)
	if err != nil {
		return err
	}
	next := phaseStopped // a failed takeover: the process must exit
	defer func() {
		if u.end(run, next) != phaseServing {
			u.closeExit()
		}
	}()
	ctx, cancel := context.WithTimeoutCause(ctx, u.opts.UpgradeTimeout,
		fmt.Errorf("handoff: takeover timed out after %s", u.opts.UpgradeTimeout))
	defer cancel()
	ch, err := u.openChannel()
	if err != nil {
		return err
	}
	s := &childSession{u: u, ch: ch, gate: make(chan struct{}), ppid: u.env.getppid()}
	defer func() {
		if next != phaseServing && s.pidTmp != "" {
			_ = os.Remove(s.pidTmp) // never named: the old process serves on
		}
	}()
	moving := false
	defer func() {
		if !moving {
			s.ch.close()
		}
	}()
	defer s.openGate()
	unbind := s.ch.bindDeadline(ctx)
	if err := s.receive(ctx, run); err != nil {
		unbind()
		err = withCause(ctx, err)
		s.closeConns()
		if !errors.Is(err, ErrRejected) && !s.parentGone() {
			s.ch.setDeadline(time.Now().Add(100 * time.Millisecond))
			_ = s.ch.send(frameAbort, abortPayload(err), nil)
		}
		return s.explain(err)
	}
	// READY is sent: the old process decides now, and this one waits for
	// its word whatever its own clock or a stop says.
	unbind()
	s.ch.setDeadline(time.Time{})
	if err := s.commit(); err != nil {
		return s.explain(err)
	}
	next = phaseServing
	if s.plan.mode.movesAfterCommit() {
		moving = true
		u.mu.Lock()
		u.receiving, u.received = true, make(chan struct{})
		u.mu.Unlock()
		go s.receiveMoves()
	}
	return nil
}

// beginTakeover registers the takeover as the process's attempt, so that
// Stop can cancel it until READY.
func (u *Upgrader) beginTakeover(ctx context.Context) (context.Context, *attempt, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.phase != phaseStarting || u.run != nil {
		return nil, nil, errors.New("handoff: Ready called twice")
	}
	// The phase stays "starting": an upgrade triggered meanwhile is
	// refused with ErrNotReady.
	return u.startAttemptLocked(ctx)
}

// openChannel takes the handoff channel the old process passed and checks
// that its other end is the parent.
func (u *Upgrader) openChannel() (*channel, error) {
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
	if err := u.env.checkParent(uc); err != nil {
		uc.Close()
		return nil, err
	}
	return newChannel(uc), nil
}

// parentGone reports whether the old process has died: this process has
// been re-parented.
func (s *childSession) parentGone() bool { return s.u.env.getppid() != s.ppid }

// awaitParentGone reports whether the old process has died, waiting a
// moment for it when the channel was closed under this process: the kernel
// closes a dying process's files before it re-parents its children, so the
// EOF can come first. A living old process closes the channel only when it
// rolls back, and then it kills this process, so the wait costs nothing.
func (s *childSession) awaitParentGone(err error) bool {
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
func (s *childSession) receive(ctx context.Context, run *attempt) error {
	if err := s.ch.send(frameHello, ownHello(s.u.opts).encode(), nil); err != nil {
		return err
	}
	if err := s.hello(); err != nil {
		return err
	}
	hook("hello")
	start := time.Now()
	n, err := s.readPlan()
	if err != nil {
		return err
	}
	f, err := s.receiveEarly(n)
	if err != nil {
		return err
	}
	s.phase("fds", start, "conns", len(s.early))
	start = time.Now()
	if err := s.receiveParked(f); err != nil {
		return err
	}
	s.phase("parked", start, "conns", len(s.conns), "late", f.late)
	start = time.Now()
	stateBytes, err := s.loadState()
	if err != nil {
		return err
	}
	if err := s.receiveCarry(); err != nil {
		return err
	}
	s.phase("state", start, "bytes", stateBytes, "generation", s.carried.generation+1)
	if s.pidTmp, err = s.u.preparePIDFile(); err != nil {
		return err
	}
	if err := s.u.commit(ctx, run); err != nil {
		return err
	}
	ready := binary.BigEndian.AppendUint32(nil, uint32(len(s.conns)))
	ready = binary.BigEndian.AppendUint64(ready, stateBytes)
	s.ready = time.Now()
	return s.ch.send(frameReady, ready, nil)
}

// phase logs a step of the takeover as it ends.
func (s *childSession) phase(name string, start time.Time, args ...any) {
	args = append([]any{"phase", name, "from", s.ppid, "took", time.Since(start)}, args...)
	s.u.log.Info("handoff: takeover phase", args...)
}

func (s *childSession) hello() error {
	typ, p, err := recvNoFds(s.ch)
	if err != nil {
		return fmt.Errorf("handoff: waiting for HELLO: %w", err)
	}
	if typ != frameHello {
		return protoErr("expected HELLO, got %s", frameName(typ))
	}
	h, err := decodeHello(p)
	if err != nil {
		return err
	}
	if h.version != protocolVersion {
		return protoErr("old process speaks protocol version %d, this one %d", h.version, protocolVersion)
	}
	s.u.log.Info("handoff: taking over", "from", h.pid, "from_version", h.appVersion, "from_app", h.app)
	return nil
}

// readPlan reads the old process's plan: its mode, and how many
// connections may come early; it makes room for them.
func (s *childSession) readPlan() (int, error) {
	typ, p, err := recvNoFds(s.ch)
	if err != nil {
		return 0, err
	}
	if typ != framePlan {
		return 0, protoErr("expected PLAN, got %s", frameName(typ))
	}
	if s.plan, err = decodePlan(p); err != nil {
		return 0, err
	}
	if err := s.canServe(s.plan.early); err != nil {
		return 0, err
	}
	if err := s.canLoad(s.plan.state); err != nil {
		return 0, err
	}
	s.u.log.Info("handoff: plan", "mode", s.plan.mode, "early", s.plan.early, "state", s.plan.state)
	return int(s.plan.early), growFdTable(int(s.plan.early))
}

// canServe refuses n connections if this process cannot serve them.
func (s *childSession) canServe(n uint32) error {
	if n > 0 && !s.u.opts.Mode.movesConns() {
		return fmt.Errorf("handoff: %d connections offered but this process is in %s mode", n, s.u.opts.Mode)
	}
	if n > 0 && s.u.opts.Resume == nil {
		return fmt.Errorf("handoff: %d connections offered but Options.Resume is not set", n)
	}
	return nil
}

// canLoad refuses the old process's state if this process cannot load
// it: taken over without it, the service would go on with its state lost.
func (s *childSession) canLoad(state bool) error {
	if !state {
		return nil
	}
	if !s.u.opts.Mode.sendsState() {
		return fmt.Errorf("handoff: the old process sends its state but this process is in %s mode and cannot load it", s.u.opts.Mode)
	}
	if s.u.opts.LoadState == nil {
		return errors.New("handoff: the old process sends its state but Options.LoadState is not set: it would be lost")
	}
	return nil
}

// receiveEarly adopts the connections sent while the old process still
// served them, at most n, until FINAL, which it returns.
func (s *childSession) receiveEarly(n int) (final, error) {
	s.early = make(map[uint64]*adopted, n)
	for {
		typ, p, fds, err := s.ch.recv()
		if err != nil {
			return final{}, err
		}
		if typ == frameFinal && len(fds) == 0 {
			return s.final(p)
		}
		got, err := s.adoptBatch(typ, p, fds)
		for _, a := range got {
			if _, dup := s.early[a.rec.id]; (dup || len(s.early) == n) && err == nil {
				err = protoErr("early connection %d sent twice, or more than PLAN's %d", a.rec.id, n)
			}
			if _, dup := s.early[a.rec.id]; dup {
				s.drop(a)
				continue
			}
			s.early[a.rec.id] = a // closed with the rest on error
		}
		if err != nil {
			return final{}, err
		}
		if s.seq == 1 {
			hook("first-batch")
		}
		if err := s.progress(); err != nil {
			return final{}, err
		}
	}
}

func (s *childSession) final(p []byte) (final, error) {
	f, err := decodeFinal(p)
	if err != nil {
		return f, err
	}
	if err := s.canServe(f.conns); err != nil {
		return f, err
	}
	if f.late > 0 {
		return f, growFdTable(int(f.late))
	}
	return f, nil
}

// receiveParked takes the parked connections' unread bytes and state: by
// id for the early ones (PARKED), with their fds for the late ones
// (CONNS). Early connections FINAL does not name were closed by the old
// process since: this process's copy goes too.
func (s *childSession) receiveParked(f final) error {
	late := 0
	for len(s.conns) < int(f.conns) {
		typ, p, fds, err := s.ch.recv()
		if err != nil {
			return err
		}
		var got []*adopted
		if typ == frameParked && len(fds) == 0 {
			got, err = s.claim(p)
		} else {
			got, err = s.adoptBatch(typ, p, fds)
			late += len(got)
		}
		s.conns = append(s.conns, got...)
		if err == nil && (late > int(f.late) || len(s.conns) > int(f.conns)) {
			err = protoErr("%d connections (%d late) received, FINAL said %d (%d late)", len(s.conns), late, f.conns, f.late)
		}
		if err != nil {
			return err
		}
		if err := s.progress(); err != nil {
			return err
		}
	}
	if s.plan.mode.movesAfterCommit() {
		return nil // the early ones move after COMMIT
	}
	for id, a := range s.early {
		s.drop(a)
		delete(s.early, id)
	}
	return nil
}

// claim matches a PARKED frame's records to early connections.
func (s *childSession) claim(p []byte) ([]*adopted, error) {
	got, recs, err := decodeConns(frameParked, p)
	if err == nil && (got != s.seq || len(recs) == 0) {
		err = protoErr("PARKED %d with %d records, expected frame %d", got, len(recs), s.seq)
	}
	if err != nil {
		return nil, err
	}
	s.seq++
	out := make([]*adopted, 0, len(recs))
	for _, r := range recs {
		a, ok := s.early[r.id]
		if !ok {
			return out, protoErr("PARKED names connection %d, which was not sent early", r.id)
		}
		delete(s.early, r.id)
		a.rec = r
		out = append(out, a)
	}
	return out, nil
}

func (s *childSession) progress() error {
	adopted := len(s.early) + len(s.conns)
	p := binary.BigEndian.AppendUint32(nil, s.seq-1)
	return s.ch.send(frameProgress, binary.BigEndian.AppendUint32(p, uint32(adopted)), nil)
}

// adoptBatch turns one CONNS frame into connections; it owns fds. On
// error, the connections already made are returned for closing with the rest.
func (s *childSession) adoptBatch(typ byte, p []byte, fds []int) ([]*adopted, error) {
	if typ != frameConns {
		closeFds(fds)
		return nil, protoErr("expected CONNS, got %s", frameName(typ))
	}
	got, recs, err := decodeConns(frameConns, p)
	if err == nil && (got != s.seq || len(recs) != len(fds) || len(recs) == 0) {
		err = protoErr("CONNS %d with %d records and %d fds, expected frame %d", got, len(recs), len(fds), s.seq)
	}
	if err != nil {
		closeFds(fds)
		return nil, err
	}
	s.seq++
	out := make([]*adopted, 0, len(fds))
	for i, fd := range fds {
		nc, err := fdConn(fd)
		if err != nil {
			closeFds(fds[i+1:])
			return out, fmt.Errorf("handoff: adopt connection %d: %w", recs[i].id, err)
		}
		a := &adopted{nc: nc, rec: recs[i], gate: s.gate}
		if s.plan.mode.movesAfterCommit() {
			a.gate = make(chan struct{})
		}
		s.wait(a)
		out = append(out, a)
	}
	return out, nil
}

// loadState hands the state stream to the application and checks it whole.
// A stream PLAN did not announce must be empty: one it announced has
// passed canLoad.
func (s *childSession) loadState() (uint64, error) {
	r := newStateReader(s.ch)
	if load := s.u.opts.LoadState; load != nil && s.u.opts.Mode.sendsState() {
		if err := callSafely("load state", func() error { return load(r) }); err != nil {
			return 0, err
		}
	}
	if err := r.drain(); err != nil {
		return 0, err
	}
	if !s.plan.state && r.total > 0 {
		return 0, protoErr("%d bytes of state after a PLAN that announced none", r.total)
	}
	return r.total, nil
}

// receiveCarry reads where the chain stands and the carried values; they
// count once COMMIT comes.
func (s *childSession) receiveCarry() error {
	typ, p, err := recvNoFds(s.ch)
	if err == nil && typ != frameCarry {
		err = protoErr("expected CARRY, got %s", frameName(typ))
	}
	if err == nil {
		s.carried, err = decodeCarried(p)
	}
	return err
}

// commit waits for the old process's word. COMMIT makes this process the
// owner of everything: it puts its PID file in place, joins the old process's
// process group and starts serving. ABORT, or the old process's death,
// means it never will.
func (s *childSession) commit() error {
	typ, p, err := recvNoFds(s.ch)
	if err == nil && typ != frameCommit {
		err = protoErr("expected COMMIT, got %s", frameName(typ))
	}
	if err != nil {
		s.closeConns()
		return fmt.Errorf("handoff: waiting for COMMIT: %w", err)
	}
	// COMMIT is the decision: a payload this process cannot read costs
	// it the record of how it started, nothing more.
	if info, err := decodeCommitInfo(p); err == nil {
		s.u.mu.Lock()
		s.u.takenOver = info.result(s.u.opts.Binary, s.ppid, s.u.env.getpid(), s.plan.mode)
		s.u.mu.Unlock()
	} else {
		s.u.log.Warn("handoff: COMMIT's upgrade record unreadable", "err", err)
	}
	s.u.chain.adopt(s.carried, len(s.conns))
	for _, a := range s.conns {
		a.serve = true
	}
	s.openGate()
	s.u.log.Info("handoff: took over", "from", s.ppid, "conns", len(s.conns), "generation", s.u.generation(),
		"waited", time.Since(s.ready))
	if err := s.u.installPIDFile(s.pidTmp); err != nil {
		s.u.log.Error("handoff: took over, but", "err", err)
	}
	if err := s.u.env.joinGroup(s.ppid); err != nil {
		s.u.log.Warn("handoff: could not join the old process's process group", "err", err)
	}
	// The supervisor hears that this process serves before the old one
	// may exit; whoever asked the old process for this upgrade, once the
	// PID file names this process.
	s.u.notify(Notice{Event: NoticeServing, From: s.ppid})
	s.ch.setDeadline(time.Now().Add(time.Second))
	_ = s.ch.send(frameServing, nil, nil)
	return nil
}

// wait starts a's goroutine, which serves it once the gate opens, if it
// is to be served.
func (s *childSession) wait(a *adopted) {
	go func() {
		buf := touched(readBufSize)
		waitDeep(a.gate)
		if a.serve {
			c := s.u.reg.track(a.nc, a.rec.kind, append(buf, a.rec.unread...))
			if a.takenUp != nil {
				c.takingUp.Store(&a.takenUp)
			}
			s.u.opts.Resume(c, a.rec.state)
			c.takeUp()
		}
	}()
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

const stackReserve = 4 << 10

// openGate lets every adopted connection's goroutine go on: to serve it,
// or to end. Only the session's goroutine calls it.
func (s *childSession) openGate() {
	select {
	case <-s.gate:
	default:
		close(s.gate)
	}
}

// closeConns drops this process's copies of connections it will not serve;
// the old process still holds them, so no peer notices.
func (s *childSession) closeConns() {
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
func (s *childSession) drop(a *adopted) {
	_ = a.nc.Close()
	if a.gate != s.gate {
		close(a.gate)
	}
}

// receiveMoves runs a Rolling move in the new process, which serves
// already: each connection the old process sends is resumed at once. It
// ends at END, when the early copies never claimed are closed, or when the
// channel fails: then the old process has died (or will take its
// connections back), and those copies are closed too.
func (s *childSession) receiveMoves() {
	defer s.endMoves()
	s.ch.setDeadline(time.Time{}) // the move lasts as long as the old process says
	start, moved := time.Now(), 0
	for {
		typ, p, fds, err := s.ch.recv()
		if err != nil {
			s.u.log.Error("handoff: the rolling move ended early; the old process keeps what it has", "from", s.ppid,
				"moved", moved, "err", err)
			return
		}
		var got []*adopted
		switch typ {
		case frameParked:
			got, err = s.claim(p)
		case frameConns:
			got, err = s.adoptBatch(typ, p, fds)
		case frameClosed:
			err = s.closeEarly(p)
		case frameEnd:
			s.logEnd(p, start, moved)
			return
		default:
			closeFds(fds)
			err = protoErr("unexpected %s during the move", frameName(typ))
		}
		for _, a := range got {
			a.serve = true
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

// closeEarly closes the copies of early connections the old process has
// closed (CLOSED), so that their clients see the close now.
func (s *childSession) closeEarly(p []byte) error {
	ids, err := decodeIDs(p)
	for _, id := range ids {
		if a, ok := s.early[id]; ok {
			delete(s.early, id)
			s.drop(a)
		}
	}
	return err
}

func (s *childSession) logEnd(p []byte, start time.Time, moved int) {
	e, err := decodeMoveEnd(p)
	if err != nil {
		s.u.log.Warn("handoff: END unreadable", "err", err)
	}
	s.u.moveDone(time.Since(start), int(e.stayed), int(e.closed))
	s.u.log.Info("handoff: rolling move done", "from", s.ppid, "moved", moved, "took", time.Since(start),
		"stayed_with_old", e.stayed, "closed", e.closed)
}

// endMoves closes the early copies never claimed and the channel, waits
// until the moved connections' handlers have taken them up, and lets this
// process start upgrades of its own.
func (s *childSession) endMoves() {
	for id, a := range s.early {
		s.drop(a)
		delete(s.early, id)
	}
	s.ch.close()
	s.awaitTakenUp()
	s.u.mu.Lock()
	s.u.receiving = false
	close(s.u.received)
	s.u.mu.Unlock()
}

// awaitTakenUp waits until the handler of every connection moved here has
// taken it up (Options.Resume): before that it may not have applied what
// the connection carried, and a stop, which waits for the move to end,
// would save a state without it. A handler that has not done so within
// Options.MoveTimeout is not waited for any longer, with a warning.
func (s *childSession) awaitTakenUp() {
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
