package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/statefile"
)

// upgrade is what SIGHUP does (handoff.Run calls it, one at a time): a
// restart in restart mode, else the library's upgrade, logged.
func (p *process) upgrade() {
	if p.cfg.upgradeMode != modeRestart {
		p.libraryUpgrade()
		return
	}
	if err := p.restart(); err != nil {
		// Past the point of no return: nothing serves here any more.
		p.log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// libraryUpgrade runs a full, rolling or listeners-only upgrade and logs
// how it ended.
func (p *process) libraryUpgrade() {
	mode, start := p.cfg.upgradeMode, time.Now()
	p.prof.heap("old-at-sighup", false)
	p.prof.start("old")
	p.log.Info("upgrade starting", "mode", mode, "binary", p.up.Binary())
	err := p.up.Upgrade(context.Background())
	switch {
	case errors.Is(err, handoff.ErrUpgradeInProgress):
		// handoffctl started one: not this upgrade's failure.
		p.log.Warn("upgrade refused: another upgrade is in progress", "mode", mode)
	case err != nil:
		p.prof.stop()
		p.srv.StopTracking() // a pre-copy's, if the upgrade failed between its bulk and its changes
		p.reclaimMarker()
		p.log.Error("upgrade failed; this process carries on", "mode", mode, "err", err, "took", time.Since(start))
	default:
		p.log.Info("upgrade complete", "mode", mode, "took", time.Since(start))
	}
}

// beforeUpgrade is the library's BeforeUpgrade, whoever triggered the
// upgrade (SIGHUP, handoffctl, a peer container). In full and rolling
// mode it asks the binary the upgrade starts which state schemas it reads
// (schemas.go), while the upgrade goes on; SaveState waits for the
// answer. In listeners mode, where no state travels, it writes the state
// file the new process restores as a cold start would: what this process
// changes from then on is lost. An error refuses the upgrade.
func (p *process) beforeUpgrade() error {
	if p.cfg.upgradeMode == modeFull || p.cfg.upgradeMode == modeRolling {
		p.next.Store(startAsk(p.up.Binary(), func(err error) {
			p.log.Info("sending the ledger in this version's schema", "schema", p.schema, "why", err)
		}))
		return nil
	}
	if p.cfg.upgradeMode != modeListeners || p.cfg.state == "" {
		return nil
	}
	if err := statefile.WriteFile(p.cfg.state, p.srv.SaveState); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// sendState is the library's SaveState: the ledger for the new process,
// in schema 3 if it is known to read it, else in this version's own.
func (p *process) sendState(w io.Writer) error {
	v := schemaFor(p.next.Swap(nil).answer(), p.schema)
	p.log.Info("sending the ledger", "schema", v)
	return p.srv.SaveStateAs(w, v)
}

// precopy is the library's Precopy for a v2 ledger in full mode (unless
// -precopy=false): its bulk goes to the new process while every
// connection is served, in the schema SaveState would use, and only the
// accounts changed since go in the pause. A new process without it (a v1
// binary) declines, and gets the ledger through SaveState.
func (p *process) precopy() *handoff.Precopy {
	if p.schema != ledger.Schema2 || !p.cfg.precopy {
		return nil
	}
	return &handoff.Precopy{Save: p.sendBulk, SaveChanges: p.sendChanges,
		Load: p.srv.PreloadState, LoadChanges: p.srv.LoadChanges}
}

func (p *process) sendBulk(w io.Writer) error {
	v := schemaFor(p.next.Swap(nil).answer(), p.schema)
	p.precopyAs.Store(v)
	p.log.Info("sending the ledger", "schema", v, "precopy", true)
	return p.srv.PrecopySave(w, v)
}

func (p *process) sendChanges(w io.Writer) error {
	return p.srv.SaveChanges(w, p.precopyAs.Load())
}

// reclaimMarker names this process in the marker again after a rolling
// upgrade failed. Such a failure comes after the commit, during the move:
// the new process had claimed the marker (and may have removed it at a
// stop); this process owns the ledger again, unsaved.
func (p *process) reclaimMarker() {
	if p.cfg.upgradeMode != modeRolling || p.state.path == "" {
		return
	}
	if err := p.state.claim(p.version); err != nil {
		p.log.Error("marker not rewritten; a cold start may take the state file for current", "err", err)
	}
}

// drain serves the connections that stayed with this process after a
// listeners-only upgrade until their clients leave or ctx ends (the drain
// timeout, or a stop signal: handoff.Run), then closes the rest: their
// clients reconnect, to the new process.
func (p *process) drain(ctx context.Context) {
	start := time.Now()
	p.log.Info("draining", "conns", len(p.up.Conns()), "timeout", p.cfg.drainTimeout)
	_ = p.up.Drain(ctx) // an error says that some are left: closed below
	p.log.Info("drain done", "closed", closeConns(p.up), "took", time.Since(start))
}

// closeConns closes every connection this process still serves and says
// how many there were.
func closeConns(up *handoff.Upgrader) int {
	conns := up.Conns()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

// envRestartedAt tells the image a restart executes when the restart
// started (Unix nanoseconds), so that it can log how long it took, and
// that its start is not an operator's cold start.
const envRestartedAt = "PDF_RESTARTED_AT"

// restart (restart mode) uses none of the library's upgrades: it saves the
// state file, stops serving and executes the binary again in this
// process, which keeps its pid. It returns nil, having changed nothing, if
// the binary cannot be executed or the state cannot be saved; a later
// error leaves nothing to carry on with.
func (p *process) restart() error {
	start, bin := time.Now(), p.up.Binary()
	p.log.Info("upgrade starting", "mode", modeRestart, "binary", bin)
	if err := unix.Access(bin, unix.X_OK); err != nil {
		p.log.Error("upgrade failed; this process carries on", "mode", modeRestart,
			"err", fmt.Errorf("binary %s: %w", bin, os.NewSyscallError("access", err)))
		return nil
	}
	// Save before closing anything, so that a failed save (a full disk)
	// leaves the process serving. A save that succeeds locks the ledger.
	saved, err := p.state.finalSave(p.srv)
	if !saved {
		p.log.Error("upgrade failed; this process carries on", "mode", modeRestart, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	// New clients are refused from here on, not queued. No upgrade has
	// handed anything over, so Stop has nothing to report.
	_ = p.up.Stop()
	_ = p.ln.Close()
	<-p.up.Exit()
	p.log.Info("state saved; executing", "path", p.cfg.state, "closed", closeConns(p.up), "binary", bin)
	if err := closeOnExecAbove2(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	os.Setenv(envRestartedAt, strconv.FormatInt(start.UnixNano(), 10))
	err = syscall.Exec(bin, os.Args, os.Environ())
	return fmt.Errorf("restart: execute %s: %w", bin, os.NewSyscallError("execve", err))
}

// closeOnExecAbove2 marks every fd above stderr close-on-exec, so that
// the new image gets no other. Go opens its own so; this catches those a
// parent passed down.
func closeOnExecAbove2() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list fds: %w", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		// The fd that listed the directory is closed by now: EBADF.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return os.NewSyscallError("fcntl", err)
		}
	}
	return nil
}

// logRestarted ends a restart's log: the image it executed is serving.
func logRestarted(log *slog.Logger) {
	ns, err := strconv.ParseInt(os.Getenv(envRestartedAt), 10, 64)
	os.Unsetenv(envRestartedAt)
	if err == nil {
		log.Info("upgrade complete", "mode", modeRestart, "took", time.Since(time.Unix(0, ns)))
	}
}
