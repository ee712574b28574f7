package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/statefile"
)

// envRestartedAt tells the image a restart executes when the restart
// started (Unix nanoseconds), so that it can log how long it took.
const envRestartedAt = "PDF_RESTARTED_AT"

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

// restart writes the state file, stops serving and executes the binary in
// this process, which keeps its pid; the new image restores the file as a
// cold start does. It returns nil, having changed nothing, if the binary
// cannot be executed or the state cannot be saved; any later error leaves
// nothing to carry on with.
func (p *process) restart() error {
	start := time.Now()
	bin := p.up.Binary()
	p.log.Info("upgrade starting", "mode", modeRestart, "binary", bin)
	if err := unix.Access(bin, unix.X_OK); err != nil {
		p.log.Error("upgrade failed; this process carries on", "mode", modeRestart,
			"err", fmt.Errorf("binary %s: %w", bin, os.NewSyscallError("access", err)))
		return nil
	}
	// Save before closing anything, so that a save that fails (a full
	// disk) leaves the process serving. From a save that succeeds on, the
	// ledger is locked: no client is told of a change the file misses.
	saved, err := p.state.finalSave(p.srv)
	if !saved {
		p.log.Error("upgrade failed; this process carries on", "mode", modeRestart, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	// Stop the Upgrader and close the listener: new clients are refused
	// from here on, not queued. No upgrade hands anything over in this
	// mode, so Stop has nothing to report. (The image executed next is a
	// first process: the handoff library removed what a parent passed,
	// variable and fds, when this process started.)
	_ = p.up.Stop()
	_ = p.ln.Close()
	<-p.up.Exit()
	closed := closeConns(p.up)
	p.log.Info("state saved; executing", "path", p.cfg.state, "closed", closed, "binary", bin)
	return execSelf(bin, start)
}

// execSelf replaces the process's image with bin, with the same arguments.
// Only stdin, stdout and stderr survive: every other fd is marked
// close-on-exec first, whoever opened it.
func execSelf(bin string, start time.Time) error {
	if err := closeOnExecAbove2(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, envRestartedAt+"=")
	})
	env = append(env, envRestartedAt+"="+strconv.FormatInt(start.UnixNano(), 10))
	err := syscall.Exec(bin, os.Args, env)
	return fmt.Errorf("restart: execute %s: %w", bin, os.NewSyscallError("execve", err))
}

// closeOnExecAbove2 marks every open fd above 2 close-on-exec. Go opens its
// own fds so; this catches those a parent passed down.
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
	at := os.Getenv(envRestartedAt)
	if at == "" {
		return
	}
	os.Unsetenv(envRestartedAt)
	ns, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return
	}
	log.Info("upgrade complete", "mode", modeRestart, "took", time.Since(time.Unix(0, ns)))
}
