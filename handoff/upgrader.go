package handoff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"
)

// Upgrader runs one process's part in the chain of upgrades: it hands
// listeners, connections and state to the next process, or takes them over
// from the previous one. There is one per process. Its methods are the
// application's API; what they share with the two sides of an upgrade
// (parent.go, child.go) is its core.
type Upgrader struct {
	*core
	sigC     chan os.Signal
	ctl      *controlServer // nil without Options.ControlSocket
	takeover acceptor       // nil without Options.TakeoverSocket
}

// New creates the process's Upgrader. Only the first call in a process
// succeeds: the process has one chain of upgrades. New changes nothing
// global but SIGHUP's handling (unless Options.NoSignal).
func New(opts Options) (*Upgrader, error) { return newUpgrader(opts, processEnv) }

// newUpgrader is New acting on the OS through e.
func newUpgrader(opts Options, e *env) (*Upgrader, error) {
	if !e.claim() {
		return nil, errTwice
	}
	dir, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("handoff: working directory: %w", err)
	}
	if err := applyDefaults(&opts); err != nil {
		return nil, err
	}
	u := &Upgrader{core: newCore(opts, dir, e)}
	u.m = newMachine(u.log, u.notify)
	u.reg.keep, u.reg.release = u.keep, u.release
	var first net.Listener
	if u.parent == nil && opts.TakeoverSocket != "" {
		// Its own control socket, never an old process's: it answers
		// from here on, so that a pod's probes find this container
		// starting while it takes over.
		if err := u.openControl(); err != nil {
			return nil, err
		}
		j, err := joinTakeover(&u.opts, e, u.log)
		if err != nil {
			u.ctl.close(false)
			return nil, err
		}
		u.parent, first = j.in, j.ln
	}
	if err := u.takeSupervised(); err != nil {
		u.ctl.close(u.parent.has("unix", u.opts.ControlSocket))
		return nil, err
	}
	if !opts.NoSignal {
		u.sigC = make(chan os.Signal, 1)
		e.notify(u.sigC, syscall.SIGHUP)
		go u.onSignal()
	}
	if err := u.openControl(); err != nil {
		if u.sigC != nil {
			e.stopNotify(u.sigC)
		}
		return nil, err
	}
	u.openTakeover(first)
	return u, nil
}

// openTakeover serves the takeover socket, if Options ask for one: the
// listener this first process made, or the one its old process passed,
// handed on in turn as a ListenPlain one, so that the socket never stops
// answering. A first process accepts at once (BUSY until Ready); one that
// takes over accepts once it has: until then it would take connections
// meant for the process that serves (and a failed one for good).
func (u *Upgrader) openTakeover(first net.Listener) {
	path := u.opts.TakeoverSocket
	if path == "" {
		return
	}
	ln := first
	if f := u.parent.takeListener("unixpacket", path); f != nil {
		ln, _ = net.FileListener(f)
		f.Close()
	} else if ln == nil {
		// The old process had none (an older version): this one is
		// the first to serve it.
		ln, _ = listenFresh(path, u.env)
	}
	if ln == nil {
		u.log.Warn("handoff: no takeover socket; this process lets no peer in", "path", path)
		return
	}
	u.plain.add(handedListener{ln, takeoverKey(path)})
	u.takeover = serveTakeover(u, u.log, ln, u.opts.TakeoverTokenFile)
	if u.parent == nil && u.takeover != nil {
		u.takeover.startAccepting()
	}
}

// openControl starts the control socket's server, if Options ask for
// one; in a first process it answers at once, in a new one from Ready on.
func (u *Upgrader) openControl() error {
	path := u.opts.ControlSocket
	if path == "" || u.ctl != nil {
		return nil
	}
	ctl, err := openControl(u, u.log, path, u.parent.has("unix", path), u.ListenPlain)
	if err != nil {
		return err
	}
	u.ctl = ctl
	if u.parent == nil {
		u.ctl.open()
	}
	return nil
}

// LastUpgrade returns the phases of the last upgrade this process handed
// over, for an application's metrics; zero before one.
func (u *Upgrader) LastUpgrade() UpgradeStats {
	_, last, _ := u.m.snapshot()
	if last == nil || !last.Committed {
		return UpgradeStats{}
	}
	return last.Stats
}

// Mode is how this process's upgrades move its connections
// (Options.Mode), for layers that report what an upgrade does with theirs.
func (u *Upgrader) Mode() Mode { return u.opts.Mode }

// HasParent reports whether this process was started by an upgrade.
func (u *Upgrader) HasParent() bool { return u.parent != nil }

// Binary is the executable an upgrade starts: Options.Binary, or the
// absolute path this process was started from.
func (u *Upgrader) Binary() string { return u.opts.Binary }

// Listen returns a listener inherited from the previous process, or a new
// one made with Options.ListenConfig. Closing it closes this process's
// copy only: the process it is handed to has its own.
//
// In a first process with a Supervisor, a listening socket the supervisor
// passed for this address (socket activation, or kept across a crash) is
// adopted rather than a new one made; a new one is given to the supervisor
// to keep, if it keeps sockets.
func (u *Upgrader) Listen(network, addr string) (*Listener, error) {
	ln, fresh, err := u.listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s %s: %w", network, addr, err)
	}
	key := listenerKey(network, addr)
	if fresh {
		u.keep(ln, key, true)
	}
	l := &Listener{Listener: ln, reg: u.reg, kind: network + ":" + addr, network: network, addr: addr}
	u.reg.addListener(l)
	return l, nil
}

// listen returns an inherited listener, one the supervisor passed, or a
// new one (fresh).
func (u *Upgrader) listen(network, addr string) (ln net.Listener, fresh bool, err error) {
	if f := u.parent.takeListener(network, addr); f != nil {
		defer f.Close()
		// An inherited Unix listener leaves its file alone on close (the
		// old process serves it) until this process has taken over.
		ln, err = net.FileListener(f)
		return ln, false, err
	}
	if ln, _ := u.sup.takeListener(network, addr); ln != nil {
		return ln, false, nil
	}
	lc := u.opts.ListenConfig
	if lc == nil {
		lc = &net.ListenConfig{}
	}
	ln, err = lc.Listen(context.Background(), network, addr)
	return ln, true, err
}

// ListenPlain returns a listener inherited across upgrades as Listen's
// are, whose connections are the application's alone: never tracked,
// parked or handed over. It suits an HTTP endpoint (metrics, health
// checks) or a control socket, whose open connections end with the
// process while the listening socket goes on. After this process hands
// over, its copy is closed; the new process has its own.
func (u *Upgrader) ListenPlain(network, addr string) (net.Listener, error) {
	ln, _, err := u.listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s %s: %w", network, addr, err)
	}
	u.plain.add(handedListener{ln, listenerKey(network, addr)})
	return ln, nil
}

// Wrap tracks a connection this process made or accepted itself, so that it
// is handed over too. The Conn takes ownership of nc. kind travels with it.
//
// During an upgrade, once every connection has parked, Wrap waits for the
// upgrade's outcome (so SaveState must not call it). If the upgrade rolls
// back, the Conn is tracked as usual. If it hands over, nc was not sent:
// the Conn serves it in this process but is untracked: it is never
// parked, Conns does not list it, and the application owns it and must
// close it. The same holds for Wrap after a handover.
func (u *Upgrader) Wrap(nc net.Conn, kind string) *Conn {
	c := u.reg.track(nc, kind, nil)
	if c.reg != nil {
		u.keep(nc, kind, false)
	}
	return c
}

// Ready finishes starting this process. In a first process it writes the
// PID file. In a process started by an upgrade, it takes over the old
// process's connections and state: it receives them, calls LoadState and
// waits for the old process to commit; then it writes the PID file and
// starts Resume for every connection. On error nothing was taken over (the
// old process carries on, unless it died) and this process must exit
// without saving any state. Cancelling ctx, or calling Stop, before the
// new process has said it is ready aborts the takeover; after that, the
// old process decides and Ready waits for its word.
func (u *Upgrader) Ready(ctx context.Context) error {
	if u.parent == nil {
		u.m.ready()
		if err := u.pid.write(); err != nil {
			return err
		}
		u.settleSupervised()
		u.m.serves(0)
		u.reportStatus()
		return nil
	}
	err := u.takeOver(ctx)
	u.parent.closeUnused()
	if err != nil {
		// An exec'd child's old process still serves the socket file; a
		// peer's is its own.
		u.ctl.close(u.parent.greeted == nil)
		if u.takeover != nil {
			u.takeover.stopAccepting()
		}
		u.log.Error("handoff: takeover failed; exit without saving state", "err", err)
		return err
	}
	ownSocketFiles(u.passedListeners())
	u.ctl.open()
	if u.takeover != nil {
		u.takeover.startAccepting()
	}
	u.reportStatus()
	return nil
}

// Conns returns the connections this process serves now: accepted through
// its Listeners, wrapped or resumed, and neither closed nor handed over
// (nor wrapped after a handover, see Wrap). The
// Upgrader still owns them: closing one closes it for its peer. With
// ListenersOnly mode, these are what the application has to close after
// Exit is closed.
func (u *Upgrader) Conns() []*Conn {
	return u.reg.live()
}

// Exit is closed when this process should exit: it has handed everything to
// its successor (with ListenersOnly mode, its listeners; its connections
// are still its own), its takeover failed, or Stop was called. Call
// Exiting just before the process exits.
func (u *Upgrader) Exit() <-chan struct{} { return u.exitC }

// Exiting is the last call of a process that exits because Exit was
// closed: call it just before the process exits (returns from main, or
// os.Exit). From the commit of an upgrade on, a stop signal (SIGTERM,
// SIGINT) that reaches this process is passed on to the successor, which
// stops the service and saves its state; Exiting returns once every stop
// signal that reached this process has been passed on, so that none is
// lost if the process exits the moment one arrives. A stop signal that
// arrives after Exiting has returned is not passed on: send stops to the
// pid in Options.PIDFile, which names the successor from the commit on.
// In a process that has not handed over (or with ListenersOnly mode,
// which passes no stop on) Exiting does nothing.
func (u *Upgrader) Exiting() { u.passPendingStops() }

// Stop ends the Upgrader for a stop of the service: no more upgrades, and
// Exit is closed. Safe to call more than once, from any goroutine.
//
// An upgrade in progress is resolved first. If the old process has not
// committed it yet, it is rolled back: the new process is killed and this
// process keeps everything. If it has committed, it completes.
//
// Stop returns nil if this process owns its state and connections: the
// application saves what it must and exits. It returns ErrHandedOver if a
// successor owns them (an upgrade committed, now or before): the
// application must not save its state, which is stale, and Stop has passed
// the stop on to the successor as SIGTERM, so that the service stops and
// the successor saves. With ListenersOnly mode nothing is passed on:
// the successor owns the listeners only.
func (u *Upgrader) Stop() error {
	handed := u.m.stop()
	if u.sigC != nil {
		u.env.stopNotify(u.sigC)
	}
	u.closeExit()
	u.ctl.close(handed && !u.peerTook.Load()) // a peer did not take the file: it has its own
	if !handed {
		return nil
	}
	if u.opts.Mode.passesStop() {
		u.passStop(syscall.SIGTERM)
	}
	return ErrHandedOver
}

func (u *Upgrader) onSignal() {
	for range u.sigC {
		u.log.Info("handoff: SIGHUP: upgrading", "binary", u.opts.Binary)
		go func() { _ = u.Upgrade(context.Background()) }()
	}
}

// Upgrade starts the binary and hands it this process's listeners,
// connections and state (with ListenersOnly mode, its listeners only).
// It returns nil once the upgrade has committed; this process should then
// exit (Exit is closed), with ListenersOnly mode once it has closed
// the connections it still serves. On error, nothing was handed over and
// every connection carries on here. A call made while an upgrade runs
// returns ErrUpgradeInProgress; before Ready, ErrNotReady; after Stop,
// ErrStopped; after an upgrade committed, ErrHandedOver. Cancelling ctx
// rolls the upgrade back, unless it has committed.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	_, err := u.UpgradeWith(ctx, UpgradeRequest{})
	return err
}

// UpgradeWith is Upgrade with per-call settings, reporting each phase to
// req.Progress as it ends. It returns how the upgrade ended, and the same
// error Upgrade would. Exit is closed only after Progress has returned for
// the final event (committed or rolled_back), so that what Progress reports
// can leave the process before it exits.
func (u *Upgrader) UpgradeWith(ctx context.Context, req UpgradeRequest) (UpgradeResult, error) {
	req = req.withDefaults(&u.opts)
	res := UpgradeResult{From: u.env.getpid(), Binary: req.Binary, Began: time.Now()}
	ctx, run, err := u.m.beginUpgrade(ctx)
	if err != nil {
		res.Err, res.Cause = err, CauseRefused
		u.log.Warn("handoff: upgrade refused", "err", err)
		if req.finish != nil {
			req.finish(res)
		}
		return res, err
	}
	err = u.upgrade(ctx, run, req, &res)
	res.Stats.Mode = u.opts.Mode // Pause and the metrics tell the modes apart
	res.Took = time.Since(res.Began)
	res.Committed, res.Err = err == nil, err
	if err != nil {
		res.Cause = causeOf(err)
	}
	u.chain.count(res)
	next := phaseServing
	if err == nil {
		next = phaseHandedOver
	}
	last := res
	next = u.m.end(run, next, &last) // tells the supervisor of a rollback
	defer func() {
		if req.finish != nil {
			req.finish(res)
		}
		if next != phaseServing {
			u.closeExit()
		}
	}()
	if err != nil {
		u.event(req, Event{Phase: PhaseRolledBack, PID: res.To, Took: res.Took, Err: err})
		level, msg := slog.LevelError, "handoff: upgrade failed; this process carries on"
		if res.Cause == CauseRefused { // BeforeUpgrade said not now: nothing started
			level, msg = slog.LevelWarn, "handoff: upgrade refused; this process carries on"
		}
		u.log.Log(context.Background(), level, msg, "err", err, "cause", res.Cause,
			"generation", u.generation(), "to", res.To, "took", res.Took)
		return res, err
	}
	u.event(req, Event{Phase: PhaseCommitted, PID: res.To, Took: res.Took, Conns: res.Stats.Conns})
	u.log.Info("handoff: upgrade committed; the successor serves", "generation", u.generation(), "to", res.To, "took", res.Took)
	return res, nil
}

// Carry makes one of the application's values continue across upgrades,
// typically a counter, so that rate() and increase() do not jump: in the
// old process read is called with every connection parked, and in the new
// process restore is called with that value before any connection is
// served (for a counter: its Add method). Call it before Ready, with the
// same name in every version; a name the new process did not register is
// dropped. One call per value. ListenersOnly mode carries values too.
func (u *Upgrader) Carry(name string, read func() float64, restore func(float64)) {
	u.chain.mu.Lock()
	defer u.chain.mu.Unlock()
	u.chain.carries[name] = carry{read: read, restore: restore}
}

// Status returns a snapshot of this process for an operator.
func (u *Upgrader) Status() Status { return u.status() }

// Serving reports whether this process should get traffic: Ready has
// returned, and it is neither upgrading, handed over nor stopping. A load
// balancer's readiness check.
func (u *Upgrader) Serving() bool {
	return u.m.serving()
}

// Drain waits until this process serves no connection any more (Conns is
// empty: every one was closed, or handed over), or until ctx ends. It
// closes nothing and stops nothing: a server calls it once its listeners
// stopped accepting (after Exit is closed with ListenersOnly mode, or
// after Stop) to let its clients finish, then closes what Conns still
// lists.
//
// It returns nil when no connection is left, at once if there was none.
// If ctx ends first, it returns an error that wraps ctx.Err() and says
// how many connections are still open; they are still this process's
// (Conns lists them), and the caller closes them. A connection tracked
// while Drain waits (Wrap, or a Listener still accepting) is waited for
// too.
func (u *Upgrader) Drain(ctx context.Context) error {
	select {
	case <-u.reg.emptied():
		return nil
	case <-ctx.Done():
		if left := len(u.Conns()); left > 0 {
			return fmt.Errorf("handoff: drain: %d connections still open: %w", left, ctx.Err())
		}
		return nil
	}
}

// errTwice is New's answer in a process that has its Upgrader.
var errTwice = errors.New("handoff: New called twice; a process has one Upgrader")
