package handoff

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"
)

// stage is where the process is in its chain of upgrades (the phase* values). The machine
// below holds it; Status reports it coarser (reported).
type stage int

const (
	phaseStarting       stage = iota // before Ready: no upgrade may start
	phaseTakingOver                  // new process: Ready receives from the old one; a stop aborts it
	phaseAwaitingCommit              // new process: READY sent; the old process decides
	phaseServing                     // ready; an upgrade may start
	phaseReceiving                   // new process serving while still receiving a Rolling move
	phaseUpgrading                   // old process: an upgrade runs and has not committed
	phaseCommitted                   // old process: committed; handing over (Rolling: moving)
	phaseHandedOver                  // a successor owns the connections and the state
	phaseStopped                     // Stop was called, or the takeover failed
)

// reported is the phase as Status names it: a takeover is still starting,
// a process receiving a move serves, and a committed upgrade is upgrading
// until it has handed over.
func (p stage) reported() stage {
	switch p {
	case phaseTakingOver, phaseAwaitingCommit:
		return phaseStarting
	case phaseReceiving:
		return phaseServing
	case phaseCommitted:
		return phaseUpgrading
	}
	return p
}

// machine is the upgrade's state, with one owner: only its methods change
// it. The sessions (parentSession, childSession, the move, the stop
// watcher) report what happened to it; Stop, SIGHUP, the control socket's
// upgrades and the supervisor's notices go through it.
//
// What Stop (stop) and an upgrade request (beginUpgrade: Upgrade, SIGHUP,
// the control socket) do in each phase:
//
//	phase           Stop                                        Stop returns    an upgrade
//	starting        stopped at once                             nil             ErrNotReady
//	takingOver      the takeover aborts; waits for it           nil             ErrNotReady
//	awaitingCommit  waits for the old process's word; stopped   nil             ErrNotReady
//	serving         stopped at once                             nil             starts
//	receiving       waits for the move's end, then as serving   nil             ErrUpgradeInProgress
//	upgrading       rolls back (new process killed); waits      nil             ErrUpgradeInProgress
//	committed       a Rolling move hurries; waits for the end   ErrHandedOver   ErrUpgradeInProgress
//	                (the new process failed: taken back)        (then nil)
//	handedOver      passed on to the successor (but in          ErrHandedOver   ErrHandedOver
//	                ListenersOnly mode)
//	stopped         nothing more                                nil             ErrStopped
type machine struct {
	log    *slog.Logger
	notify func(Notice) // tells the supervisor; called without mu held

	mu        sync.Mutex
	stage     stage
	run       *attempt       // the upgrade or takeover in progress
	stopping  bool           // Stop was called during run: it ends stopped unless handed over
	successor int            // pid of the process that took over (old process, from the commit)
	last      *UpgradeResult // the last upgrade this process started
	takenOver *UpgradeResult // the upgrade that started this process
	received  chan struct{}  // closed when a Rolling move into this process has ended; nil if none ran

	// The stops passed on to the successor (core.go).
	passOnce  sync.Once      // a stop is passed on once
	stopsC    chan os.Signal // the stop watcher's, until a Rolling move takes the service back
	stopsDone chan struct{}  // closed when the watcher has passed on what it got
}

// attempt is one upgrade (in the old process) or takeover (in the new
// one). Its decision is made once, in the machine: committed, or cancelled
// by Stop. Whichever comes first wins.
type attempt struct {
	cancel context.CancelCauseFunc
	stopC  chan struct{} // closed when Stop is first called: a Rolling move hurries
	done   chan struct{} // closed when the attempt has ended
}

func newMachine(log *slog.Logger, notify func(Notice)) *machine {
	return &machine{log: log, notify: notify}
}

// ready makes a first process serve.
func (m *machine) ready() {
	m.mu.Lock()
	if m.stage == phaseStarting {
		m.stage = phaseServing
	}
	m.mu.Unlock()
}

// beginUpgrade starts an upgrade if the process serves; otherwise it says
// why not.
func (m *machine) beginUpgrade(ctx context.Context) (context.Context, *attempt, error) {
	m.mu.Lock()
	switch m.stage {
	case phaseStarting, phaseTakingOver, phaseAwaitingCommit:
		m.mu.Unlock()
		return nil, nil, ErrNotReady
	case phaseUpgrading, phaseCommitted, phaseReceiving:
		m.mu.Unlock()
		return nil, nil, ErrUpgradeInProgress
	case phaseHandedOver:
		m.mu.Unlock()
		return nil, nil, ErrHandedOver
	case phaseStopped:
		m.mu.Unlock()
		return nil, nil, ErrStopped
	}
	ctx, run := m.startLocked(ctx, phaseUpgrading)
	m.mu.Unlock()
	m.notify(Notice{Event: NoticeUpgrading})
	return ctx, run, nil
}

// beginTakeover registers a new process's takeover, so that Stop can
// cancel it until READY. An upgrade triggered meanwhile is refused with
// ErrNotReady.
func (m *machine) beginTakeover(ctx context.Context) (context.Context, *attempt, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stage != phaseStarting {
		return nil, nil, errors.New("handoff: Ready called twice")
	}
	ctx, run := m.startLocked(ctx, phaseTakingOver)
	return ctx, run, nil
}

func (m *machine) startLocked(ctx context.Context, p stage) (context.Context, *attempt) {
	ctx, cancel := context.WithCancelCause(ctx)
	m.stage, m.stopping = p, false
	m.run = &attempt{cancel: cancel, done: make(chan struct{}), stopC: make(chan struct{})}
	return ctx, m.run
}

// commit is the attempt's point of no return: it fails if Stop or the
// context got there first. In the old process, it is made before COMMIT is
// sent, and names the successor (pid); in the new one, before READY (pid 0).
func (m *machine) commit(ctx context.Context, pid int) error {
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		// A deadline that has passed decides, even if a loaded machine
		// has not fired its timer yet: its cause names the timeout.
		<-ctx.Done()
	}
	m.mu.Lock()
	if err := context.Cause(ctx); err != nil {
		m.mu.Unlock()
		return err
	}
	if m.stage == phaseTakingOver {
		m.stage = phaseAwaitingCommit
		m.mu.Unlock()
		return nil
	}
	m.stage, m.successor = phaseCommitted, pid
	m.mu.Unlock()
	m.notify(Notice{Event: NoticeCommitting, To: pid})
	return nil
}

// tookBack records that a Rolling move's new process failed after the
// commit: this process owns the service again.
func (m *machine) tookBack() {
	m.mu.Lock()
	m.successor = 0
	m.mu.Unlock()
}

// end records an attempt's outcome and wakes Stop. next is where the
// attempt leads (handed over, serving, receiving a move, or stopped); an
// attempt that Stop saw ends stopped unless it handed over: no other
// upgrade may start in between. res, for an upgrade, is its result. It
// returns the phase the process is in now. The supervisor hears of a
// rollback.
func (m *machine) end(run *attempt, next stage, res *UpgradeResult) stage {
	m.mu.Lock()
	if m.stopping && next != phaseHandedOver {
		next = phaseStopped
	}
	if res != nil {
		m.last = res
	}
	m.stage, m.run = next, nil
	m.mu.Unlock()
	run.cancel(nil)
	close(run.done)
	if res != nil && !res.Committed {
		m.notify(Notice{Event: NoticeRolledBack, Result: res})
	}
	return next
}

// serves tells the supervisor that this process serves: a first process
// once Ready has made it so, a new one once it has taken over (from names
// the old process), an old one that took the service back.
func (m *machine) serves(from int) {
	m.notify(Notice{Event: NoticeServing, From: from})
}

// stop resolves the attempt in progress for Stop (see the table above)
// and reports whether a successor owns the service now.
func (m *machine) stop() (handedOver bool) {
	m.awaitMove()
	m.mu.Lock()
	run := m.run
	switch m.stage {
	case phaseStarting, phaseServing, phaseReceiving, phaseStopped:
		m.stage = phaseStopped
	case phaseTakingOver, phaseUpgrading:
		m.stoppingLocked(run)
		m.log.Info("handoff: stop during an upgrade: rolling it back")
		run.cancel(errStopping)
	case phaseAwaitingCommit, phaseCommitted:
		m.stoppingLocked(run)
		m.log.Info("handoff: stop during an upgrade that has committed: completing it")
	}
	serving := m.stage != phaseHandedOver
	m.mu.Unlock()
	if serving {
		m.notify(Notice{Event: NoticeStopping})
	}
	if run != nil {
		<-run.done // end has set the phase: stopped or handed over
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stage == phaseHandedOver
}

// stoppingLocked marks the attempt as seen by Stop: it ends stopped unless
// it hands over, and a Rolling move hurries.
func (m *machine) stoppingLocked(run *attempt) {
	if !m.stopping {
		close(run.stopC)
	}
	m.stopping = true
}

// awaitMove waits, in a new process still receiving a Rolling move, for
// the move to end: until then the old process serves some connections and
// would take the service back if this one went, so a stop (which the PID
// file sends here from the commit on) stops the service only once this
// process owns all of it, and every moved connection's handler has
// applied what it carried (see Options.Resume).
func (m *machine) awaitMove() {
	m.mu.Lock()
	done := m.received
	m.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	default:
		m.log.Info("handoff: stop during a rolling move: waiting for the move to end")
		<-done
	}
}

// receivingMove records, in a new process that has taken over, that a
// Rolling move now brings its connections; moveReceived ends it.
func (m *machine) receivingMove() {
	m.mu.Lock()
	m.received = make(chan struct{})
	m.mu.Unlock()
}

// moveReceived ends the Rolling move into this process: it may start
// upgrades of its own, and a Stop waiting for the move goes on.
func (m *machine) moveReceived() {
	m.mu.Lock()
	if m.stage == phaseReceiving {
		m.stage = phaseServing
	}
	close(m.received)
	m.mu.Unlock()
}

// tookOver records, in a new process, the upgrade that started it, as
// COMMIT described it; nil if COMMIT's record was unreadable.
func (m *machine) tookOver(r *UpgradeResult) {
	m.mu.Lock()
	m.takenOver = r
	m.mu.Unlock()
}

// movedIn counts n connections that a Rolling move brought to this new
// process, in the upgrade that started it, whose COMMIT came before any
// of them moved.
func (m *machine) movedIn(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.takenOver != nil {
		m.takenOver.Stats.Conns += n
	}
}

// moveDone records the end of the Rolling move that brought this new
// process its connections: how long it took here (from COMMIT on), and
// what the old process kept or closed.
func (m *machine) moveDone(took time.Duration, stayed, closed int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.takenOver; t != nil {
		t.Stats.Move, t.Stats.Stayed, t.Stats.Closed = took, stayed, closed
	}
}

// snapshot returns the phase as Status reports it and copies of the last
// upgrade and of the one that started this process.
func (m *machine) snapshot() (p stage, last, takenOver *UpgradeResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last != nil {
		l := *m.last
		last = &l
	}
	if m.takenOver != nil {
		t := *m.takenOver
		takenOver = &t
	}
	return m.stage.reported(), last, takenOver
}

// serving reports whether this process should get traffic.
func (m *machine) serving() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stage.reported() == phaseServing
}

// watchingStops records the stop watcher's channel and the channel closed
// once it has passed on what it got.
func (m *machine) watchingStops(c chan os.Signal, done chan struct{}) {
	m.mu.Lock()
	m.stopsC, m.stopsDone = c, done
	m.mu.Unlock()
}

// unwatchStops takes the stop watcher's channel, for the caller to stop
// and close; nil if there is none (any more).
func (m *machine) unwatchStops() chan os.Signal {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.stopsC
	m.stopsC = nil
	return c
}

// stopsPassed returns the channel closed once the stop watcher has passed
// on every stop it got; nil if this process never handed over.
func (m *machine) stopsPassed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopsDone == nil {
		return nil
	}
	return m.stopsDone
}

// passStopOnce calls pass with the successor's pid the first time only,
// if there is a successor.
func (m *machine) passStopOnce(pass func(pid int)) {
	m.passOnce.Do(func() {
		m.mu.Lock()
		pid := m.successor
		m.mu.Unlock()
		if pid > 0 {
			pass(pid)
		}
	})
}

func (p stage) String() string {
	switch p {
	case phaseStarting:
		return ProcessStarting
	case phaseServing:
		return ProcessServing
	case phaseUpgrading:
		return ProcessUpgrading
	case phaseHandedOver:
		return ProcessHandedOver
	}
	return ProcessStopped
}
