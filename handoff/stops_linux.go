//go:build linux

package handoff

import (
	"os"
	"syscall"
)

// Passing stop signals on to the successor, from the commit until this
// process exits.

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
