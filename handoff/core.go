package handoff

import (
	"log/slog"
	"sync"
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
		parent:  e.inherited(),
		env:     e,
		exitC:   make(chan struct{}),
		chain:   newChain(),
		started: time.Now(),
	}
	u.m = newMachine(u.log, u.notify)
	u.pid = pidFile{path: opts.PIDFile, dir: dir, log: u.log, getpid: e.getpid}
	u.reg.keep, u.reg.release = u.keep, u.release
	return u
}

func (u *core) closeExit() { u.exitOnce.Do(func() { close(u.exitC) }) }
