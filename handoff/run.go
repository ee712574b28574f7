package handoff

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Service is a server's own part of its process's life, as Run drives
// it: what it listens on, how it serves, saves and stops.
type Service struct {
	// Setup listens through the Upgrader (Listen, ListenPlain) and makes
	// what serving needs, before Ready: in a process started by an
	// upgrade the listeners are the old process's, found by address. It
	// must not accept yet. Required.
	Setup func(up *Upgrader) error
	// Serve serves until what it serves on is closed: at a handover the
	// Upgrader closes its listeners, at a stop Shutdown ends it. Run
	// calls it on a goroutine of its own once Ready has returned, and
	// logs its return only if the process still serves. Required.
	Serve func() error
	// Save saves the state at a stop, when this process owns it (a
	// successor does after a handover, and saves it at its own stop). It
	// must keep the state from changing from then on (a request it
	// answered after the save would be lost). An error keeps the process
	// serving, with its state as it was: Run logs it, and a next stop
	// signal tries again, so that a full disk loses nothing. Optional.
	Save func() error
	// Shutdown ends serving within ctx: at a stop, after Save; after a
	// handover, for what stays here (ListenersOnly mode's connections,
	// Rolling mode's stragglers). It stops accepting, lets what is in
	// flight finish and closes the rest, and returns when ctx ends at
	// the latest. After a handover Run then closes every connection
	// Conns still lists; at a stop it leaves them to the process's exit,
	// so that a supervisor that keeps sockets across a restart (systemd's
	// fd store, systemd.Options.KeepSockets) still holds them: closing
	// one takes it out of the store. Default: after a handover, wait
	// until those connections have ended (Drain); at a stop, nothing.
	Shutdown func(ctx context.Context) error
	// DrainTimeout bounds Shutdown. Default 30 s.
	DrainTimeout time.Duration
	// Upgrade is what SIGHUP does, unless Options.NoSignal: Run takes the
	// signal in the library's place and calls Upgrade on a goroutine of
	// its own while the process serves, one call at a time (a SIGHUP
	// during one is refused and logged). Set it to log the upgrades a
	// signal starts in the application's terms, or to upgrade another
	// way (examples/pdf's restart mode saves and executes the binary
	// again in place). Default: Upgrader.Upgrade, which logs how it ended.
	Upgrade func()
	// IdleAfterHandover keeps the process alive after a handover to a
	// peer (Options.TakeoverSocket), holding nothing, until a stop
	// signal, which is its own: a container of a pod whose orchestrator
	// restarts a container that exits, and whose idle one answers its
	// probes on its own control socket (kubernetes/). After an exec'd
	// upgrade a stop that reaches the old process is passed on to the new
	// one, as without it.
	IdleAfterHandover bool
}

// Run is the life of a common server's process, in one call: signals
// caught before anything can take long (SIGTERM, SIGINT, SIGHUP), New,
// svc.Setup, Ready, svc.Serve, then the wait for a handover or a stop.
// Upgrades come from SIGHUP (svc.Upgrade, unless opts.NoSignal), the
// control socket or a peer, as the Upgrader takes them: one at a time,
// each logged. After a stop whose save failed, a SIGHUP is refused: the
// process serves on, with the state it must still save.
//
// After a handover Run shuts down what stays here (a stop signal cuts
// that short, and the process then exits rather than idles), idles if
// asked, and returns nil once every stop signal that reached the process
// has been passed on (Exiting). At a stop it saves the state if this
// process owns it, shuts down and returns nil. It returns an error if
// the process could not start, or, in a process started by an upgrade,
// could not take over: the old process serves on, and this one must exit
// non-zero without saving anything.
func Run(opts Options, svc Service) error {
	if svc.Setup == nil || svc.Serve == nil {
		return errors.New("handoff: Run: Service.Setup and Service.Serve are required")
	}
	// Before New, which may take long (a takeover): no stop is lost.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stop)
	var hup chan os.Signal // nil with NoSignal: never ready
	if !opts.NoSignal {
		// Run's, not the Upgrader's, which Stop lets go: after a stop
		// whose save failed, SIGHUP's default action would kill the
		// process and lose the state it serves on with.
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		opts.NoSignal = true
	}
	up, err := New(opts)
	if err != nil {
		return err
	}
	if err := svc.Setup(up); err != nil {
		_ = up.Stop()
		return fmt.Errorf("handoff: Run: setup: %w", err)
	}
	if err := up.Ready(context.Background()); err != nil {
		return err
	}
	if svc.Upgrade == nil {
		svc.Upgrade = func() {
			up.log.Info("handoff: SIGHUP: upgrading", "binary", up.opts.Binary)
			_ = up.Upgrade(context.Background()) // it logs how it ended
		}
	}
	r := &runner{up: up, svc: svc, stop: stop, hup: hup}
	go r.serve()
	return r.wait()
}

// runner is one Run after Ready.
type runner struct {
	up        *Upgrader
	svc       Service
	stop, hup chan os.Signal
	upgrading chan struct{} // closed when svc.Upgrade returns; nil if none runs
	unsaved   bool          // a stop's save failed: the process serves on
	waiting   bool          // a SIGHUP came during the running svc.Upgrade
}

// serve runs Service.Serve. Its end is expected once an upgrade has
// committed or the process stopped (its listeners closed, whatever error
// that gives: net.ErrClosed, http.ErrServerClosed); before, it is not.
func (r *runner) serve() {
	err := r.svc.Serve()
	if r.up.Status().Phase == ProcessServing {
		r.up.log.Error("handoff: Run: Serve returned while the process serves", "err", err)
	}
}

// wait serves until the process hands over or stops.
func (r *runner) wait() error {
	exit := r.up.Exit()
	for {
		select {
		case <-exit:
			if r.up.Status().Phase != ProcessHandedOver {
				exit = nil // Stop was called: a stop signal ends it
				continue
			}
			r.upgraded()         // its last log line first
			defer r.up.Exiting() // a stop that reached this process goes to the successor
			r.handedOver()
			return nil
		case sig := <-r.stop:
			r.up.log.Info("handoff: Run: stopping", "signal", sig.String())
			if r.stopped() {
				return nil
			}
			exit, r.unsaved = nil, true // Stop has closed Exit; the process serves on
		case <-r.upgrading:
			r.upgrading = nil
			r.upgradeWaiting()
		case <-r.hup:
			r.upgrade()
		}
	}
}

// upgrade runs svc.Upgrade for a SIGHUP, unless the process must not
// upgrade now.
func (r *runner) upgrade() {
	switch {
	case r.unsaved:
		r.up.log.Warn("handoff: Run: upgrade refused: the state is not saved",
			"todo", "fix the cause, then send the stop again")
	case r.upgrading != nil:
		// Signals coalesce: one SIGHUP waits, as the kernel would keep one
		// pending. An operator who sends it as the last upgrade's failure
		// is logged must not find it refused.
		if !r.waiting {
			r.up.log.Info("handoff: Run: SIGHUP during an upgrade: it starts once this one has ended")
		}
		r.waiting = true
	default:
		done := make(chan struct{})
		r.upgrading = done
		go func() {
			defer close(done)
			r.svc.Upgrade()
		}()
	}
}

// upgradeWaiting starts the upgrade of a SIGHUP that came during the one
// that has just ended, if this process still serves (that one did not
// hand over).
func (r *runner) upgradeWaiting() {
	if !r.waiting {
		return
	}
	r.waiting = false
	if !r.up.Serving() {
		r.up.log.Info("handoff: Run: the SIGHUP that waited is dropped: this process no longer serves")
		return
	}
	r.upgrade()
}

// upgraded waits until the running svc.Upgrade, if any, has returned; a
// SIGHUP that waited for it is dropped (a stop came).
func (r *runner) upgraded() {
	if r.upgrading != nil {
		<-r.upgrading
		r.upgrading = nil
	}
	r.waiting = false
}

// handedOver ends a process whose successor serves.
func (r *runner) handedOver() {
	r.up.log.Info("handoff: Run: handed over; shutting down what stays here", "conns", len(r.up.Conns()))
	if cut := r.shutdown(true); cut || !r.svc.IdleAfterHandover {
		return
	}
	r.up.log.Info("handoff: Run: idle until stopped")
	sig := <-r.stop
	r.up.log.Info("handoff: Run: stopping while idle", "signal", sig.String())
	_ = r.up.Stop() // ErrHandedOver: the successor owns what there was
}

// stopped stops the service for a stop signal and reports whether the
// process may exit: not if it owns its state and could not save it.
func (r *runner) stopped() bool {
	err := r.up.Stop() // resolves an upgrade in progress
	r.upgraded()       // before the save: a svc.Upgrade may hold the state
	if errors.Is(err, ErrHandedOver) {
		r.up.log.Info("handoff: Run: a successor owns the state and saves it at its own stop")
	} else if r.svc.Save != nil {
		if err := r.svc.Save(); err != nil {
			r.up.log.Error("handoff: Run: state not saved; still serving", "err", err,
				"todo", "fix the cause, then send the stop again; SIGKILL loses every change since the last save")
			return false
		}
	}
	r.shutdown(false)
	return true
}

// shutdown runs Service.Shutdown within DrainTimeout, then, after a
// handover, closes what the Upgrader still lists. After a handover a stop signal cuts it
// short: cut says so.
func (r *runner) shutdown(handedOver bool) (cut bool) {
	d := r.svc.DrainTimeout
	if d <= 0 {
		d = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if handedOver {
		end := r.cutShort(cancel)
		defer func() { cut = end() }()
	}
	shutdown := r.svc.Shutdown
	if shutdown == nil && handedOver {
		shutdown = r.up.Drain
	}
	if shutdown != nil {
		if err := shutdown(ctx); err != nil {
			r.up.log.Warn("handoff: Run: shutdown", "err", err)
		}
	}
	if handedOver { // at a stop, the exit closes them (Service.Shutdown says why)
		for _, c := range r.up.Conns() {
			_ = c.Close()
		}
	}
	return false
}

// cutShort calls cancel at a stop signal until end is called; end
// reports whether one came.
func (r *runner) cutShort(cancel func()) (end func() bool) {
	done, cut := make(chan struct{}), make(chan bool, 1)
	go func() {
		select {
		case sig := <-r.stop:
			r.up.log.Info("handoff: Run: stop during the shutdown after a handover: cutting it short", "signal", sig.String())
			cancel()
			cut <- true
		case <-done:
			cut <- false
		}
	}()
	return func() bool { close(done); return <-cut }
}
