package handoff

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// core is one process's part in the chain of upgrades, as the Upgrader's
// API and the two sides of an upgrade (parent.go in the old process,
// child.go in the new one) share it. The upgrade's state is m's alone:
// the sides report to it and read it, and never keep their own.
type core struct {
	opts   Options
	log    *slog.Logger
	reg    *registry
	dir    string       // working directory at New: upgrades start the binary there
	parent *inheritance // what the previous process passed; nil in a first process
	sup    *supervised  // what the supervisor passed a first process; nil if nothing
	env    *env         // the OS, or a test's stand-in

	chain   *chain    // generation, totals and carried values
	started time.Time // New

	plain plainListeners
	// peerTook is set at a handover to a peer: this process keeps its
	// control socket, which it did not pass on (releasePlain).
	peerTook atomic.Bool

	m        *machine // the upgrade's state: phase, attempt, successor, stops (machine.go)
	pid      pidFile  // Options.PIDFile
	exitOnce sync.Once
	exitC    chan struct{}
}

func newCore(opts Options, dir string, e *env) *core {
	u := &core{
		opts:    opts,
		log:     opts.Logger.With("pid", e.getpid()),
		reg:     newRegistry(opts.MaxBuffered),
		dir:     dir,
		parent:  e.fromParent(),
		env:     e,
		exitC:   make(chan struct{}),
		chain:   newChain(),
		started: time.Now(),
	}
	u.pid = pidFile{path: opts.PIDFile, dir: dir, log: u.log, getpid: e.getpid}
	return u
}

func (u *core) closeExit() { u.exitOnce.Do(func() { close(u.exitC) }) }

func (u *core) status() Status {
	p, last, takenOver := u.m.snapshot()
	st := Status{PID: os.Getpid(), Version: u.opts.Version, Phase: p.String(), Start: u.started,
		Last: last, TakenOver: takenOver}
	u.chain.mu.Lock()
	st.Generation, st.ChainStart = u.chain.generation, u.chain.start
	st.Totals = Totals{Committed: u.chain.totals.Committed, ConnsHandedOver: u.chain.totals.ConnsHandedOver,
		RolledBack: map[string]uint64{}}
	for k, v := range u.chain.totals.RolledBack {
		st.Totals.RolledBack[k] = v
	}
	u.chain.mu.Unlock()
	st.Conns = map[string]int{}
	for _, c := range u.reg.live() {
		st.Conns[c.Kind()]++
	}
	return st
}

// movedIn counts n connections that a Rolling move brought to this new
// process, as they arrive: the totals and the upgrade that started it,
// whose COMMIT came before any of them moved.
func (u *core) movedIn(n int) {
	u.chain.mu.Lock()
	u.chain.totals.ConnsHandedOver += uint64(n)
	u.chain.mu.Unlock()
	u.m.movedIn(n)
}

// passedListeners returns every listener the next process inherits: those
// of Listen and of ListenPlain.
func (u *core) passedListeners() []handedListener {
	var out []handedListener
	for _, l := range u.reg.listenerList() {
		out = append(out, handedListener{l.Listener, listenerKey(l.network, l.addr)})
	}
	return append(out, u.plain.list()...)
}

// releasePlain closes this process's copies of the ListenPlain listeners
// at a handover. After one to a peer the control socket stays: the peer
// has its own (each container has its own /tmp), and this process,
// handed over but maybe idle for long, answers its probes on it.
func (u *core) releasePlain(toPeer bool) {
	stay := ""
	if toPeer && u.opts.ControlSocket != "" {
		u.peerTook.Store(true)
		stay = listenerKey("unix", u.opts.ControlSocket)
	}
	u.plain.release(stay)
}

// event reports a phase of an upgrade to the caller's Progress, and logs it.
func (u *core) event(req UpgradeRequest, e Event) {
	if req.Progress != nil {
		req.Progress(e)
	}
	if e.Phase == PhaseCommitted || e.Phase == PhaseRolledBack {
		return // logged by UpgradeWith with the reason
	}
	u.log.Info("handoff: upgrade phase", "phase", e.Phase, "generation", u.generation(), "to", e.PID,
		"took", e.Took, "conns", e.Conns, "bytes", e.Bytes)
}

// generation is the chain's count of committed upgrades before this
// process served.
func (u *core) generation() uint64 {
	u.chain.mu.Lock()
	defer u.chain.mu.Unlock()
	return u.chain.generation
}

// watchStops passes SIGTERM and SIGINT on to the successor from the commit
// until this process exits (Exiting, passPendingStops): a stop signal to
// the old pid stops the service.
func (u *core) watchStops() {
	c, done := make(chan os.Signal, 1), make(chan struct{})
	u.m.watchingStops(c, done)
	u.env.notify(c, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		defer close(done)
		for sig := range c {
			u.passStop(sig.(syscall.Signal))
		}
	}()
}

// passPendingStops ends watchStops and returns once every stop signal
// this process received until now has been passed on: signal.Stop
// returns only once the signals already caught are in the channel, and
// the goroutine passes them on before it ends.
func (u *core) passPendingStops() {
	done := u.m.stopsPassed()
	if done == nil {
		return // never handed over
	}
	u.unwatchStops()
	<-done
}

// passStop sends sig to the successor, once.
func (u *core) passStop(sig syscall.Signal) {
	u.m.passStopOnce(func(pid int) {
		u.log.Info("handoff: stop passed on to the process that took over", "to", pid, "signal", sig.String())
		if err := u.env.kill(pid, sig); err != nil {
			u.log.Warn("handoff: could not pass the stop on", "to", pid, "err", err)
		}
	})
}

// unwatchStops ends watchStops: this process owns the service again.
func (u *core) unwatchStops() {
	if c := u.m.unwatchStops(); c != nil {
		u.env.stopNotify(c)
		close(c) // ends watchStops's goroutine: Stop has returned, nothing sends on c
	}
}
