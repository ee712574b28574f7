package app

import (
	"sync"
	"time"

	"github.com/handoff-dev/handoff/statefile"
)

// startSnapshots starts writing snapshots, if -snapshot is set, and
// returns the function that ends them; it may be called more than once.
func (p *process) startSnapshots() (end func()) {
	if p.cfg.snapshot <= 0 {
		return func() {}
	}
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		p.snapshots(done)
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-ended
	}
}

// snapshots writes the ledger to -state every -snapshot interval while
// this process serves, so that a crash loses at most one interval of
// changes; with -fdstore the clients keep their connections across it.
// It returns when done is closed, and never writes after that: a final
// save must not be overwritten by an older snapshot.
func (p *process) snapshots(done <-chan struct{}) {
	t := time.NewTicker(p.cfg.snapshot)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if !p.up.Serving() { // upgrading, handed over or stopping
			continue
		}
		err := statefile.WriteFile(p.state.path, p.srv.SaveState)
		switch {
		case err != nil && !failing:
			p.log.Error("snapshot not written; a crash now loses more", "path", p.state.path, "err", err)
		case err == nil && failing:
			p.log.Info("snapshots written again", "path", p.state.path)
		}
		failing = err != nil
	}
}
