package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/statefile"
)

// process is what an upgrade works on.
type process struct {
	cfg     config
	version string
	state   stateFile
	srv     *server.Server
	up      *handoff.Upgrader
	ln      *handoff.Listener
	log     *slog.Logger
	stop    <-chan os.Signal // SIGTERM, SIGINT
	hup     <-chan os.Signal // SIGHUP

	// snapshotting guards a listeners-mode upgrade as a whole: the library
	// refuses a second Upgrade while one runs (ErrUpgradeInProgress), but
	// the state file written before it is this application's step, and a
	// second SIGHUP must not rewrite the file that the first upgrade's new
	// process reads and then owns.
	snapshotting atomic.Bool
	upgrades     sync.WaitGroup // upgrade goroutines
}

// upgrade runs a full, rolling or listeners-only upgrade. In listeners mode it
// first writes the state file, which the new process restores as a cold
// start would: what this process changes after the snapshot is lost.
func (p *process) upgrade() {
	defer p.upgrades.Done()
	mode := p.cfg.upgradeMode
	if mode == modeListeners {
		if !p.snapshotting.CompareAndSwap(false, true) {
			p.log.Warn("upgrade refused: another upgrade is in progress", "mode", mode)
			return
		}
		defer p.snapshotting.Store(false)
	}
	start := time.Now()
	p.log.Info("upgrade starting", "mode", mode, "binary", p.up.Binary())
	if mode == modeListeners {
		if err := statefile.WriteFile(p.cfg.state, p.srv.SaveState); err != nil {
			p.log.Error("upgrade failed; this process carries on", "mode", mode,
				"err", fmt.Errorf("save state: %w", err), "took", time.Since(start))
			return
		}
	}
	err := p.up.Upgrade(context.Background())
	switch {
	case errors.Is(err, handoff.ErrUpgradeInProgress):
		// Not this upgrade's failure: the marker is the running one's.
		p.log.Warn("upgrade refused: another upgrade is in progress", "mode", mode)
	case err != nil:
		p.reclaimMarker()
		p.log.Error("upgrade failed; this process carries on", "mode", mode, "err", err, "took", time.Since(start))
	default:
		p.log.Info("upgrade complete", "mode", mode, "took", time.Since(start))
	}
}

// reclaimMarker names this process in the marker again after a rolling
// upgrade failed. Such a failure comes after the commit, during the move:
// the new process had claimed the marker, and may have removed it at a
// stop; this process owns the ledger again, unsaved, and a cold start
// after its crash must know.
func (p *process) reclaimMarker() {
	if p.cfg.upgradeMode != modeRolling || p.state.path == "" {
		return
	}
	if err := p.state.claim(p.version); err != nil {
		p.log.Error("marker not rewritten; a cold start may take the state file for current", "err", err)
	}
}

// drain serves the connections that stayed with this process after a
// listeners-only upgrade until their clients leave, the drain timeout ends
// or a stop signal comes, then closes the rest. Their clients reconnect to
// the new process.
func (p *process) drain(stop <-chan os.Signal) {
	start := time.Now()
	p.log.Info("draining", "conns", len(p.up.Conns()), "timeout", p.cfg.drainTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.drainTimeout)
	defer cancel()
	go func() {
		select {
		case sig := <-stop:
			p.log.Info("drain cut short", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	_ = p.up.Drain(ctx) // an error says that some are left: closed below
	closed := closeConns(p.up)
	p.log.Info("drain done", "closed", closed, "took", time.Since(start))
}

// closeConns closes every connection this process still serves and says
// how many there were. Their handlers see the error and return.
func closeConns(up *handoff.Upgrader) int {
	conns := up.Conns()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}
