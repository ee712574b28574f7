package app

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Restart mode (-upgrade-mode restart) uses none of the library's
// upgrades: it saves the state file and executes the binary again in this
// process, as a plain restart would, for benchmarks to compare with.

// envRestartedAt tells the image a restart executes when the restart
// started (Unix nanoseconds), so that it can log how long it took.
const envRestartedAt = "PDF_RESTARTED_AT"

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
