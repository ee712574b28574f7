// Package proc holds the few process chores that the demo and the
// benchmark, which both drive real server processes from outside, share:
// telling whether a pid still runs and what it uses (/proc), waiting for a
// condition, deploying a binary the way a package manager does, building
// one for a test, and running a server's chain of upgraded processes as one
// group (Group).
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Alive reports whether pid runs. A zombie counts as gone: a process
// reparented to an init that is slow to reap stays one a while.
func Alive(pid int) bool {
	f, err := stat(pid)
	return err == nil && (len(f) == 0 || f[0] != "Z")
}

// stat returns the fields of /proc/<pid>/stat that follow the command
// name, the state (field 3 of proc(5)) first. The name, in parentheses,
// may hold spaces: the fields start after the last ')'.
func stat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])), nil
}

// CPUTime returns the CPU time pid has used, user and system; 0 if it
// cannot be read.
func CPUTime(pid int) time.Duration {
	f, err := stat(pid)
	if err != nil || len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64) // fields 14 and 15
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on Linux.
const clockTicks = 100

// StatusBytes returns a "kB" field of /proc/<pid>/status, such as VmRSS
// or VmHWM, in bytes.
func StatusBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// OpenFds counts the fds pid has open; 0 if it cannot be read.
func OpenFds(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// ErrTimeout is Poll's error when the timeout passes first.
var ErrTimeout = errors.New("timed out")

// Poll calls done every period until it reports true or fails, ctx ends
// or timeout passes (an error wrapping ErrTimeout).
func Poll(ctx context.Context, period, timeout time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		ok, err := done()
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("%w after %v", ErrTimeout, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Install deploys the executable read from src at dst: it writes a new
// file beside dst and renames it over, so a running process keeps its old
// inode and the next start (or upgrade) gets the new one.
func Install(dst string, src io.Reader) error {
	tmp := dst + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	_, err = io.Copy(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}

// repoModule is the root module's path; the repository's other modules
// (examples/, bench/) live in directories named like their paths below it.
const repoModule = "github.com/handoff-dev/handoff"

// Build compiles the package with import path pkg (of any module of this
// repository, so neither the caller's directory nor its module matters)
// into the executable out, for tests that run real binaries. It builds in
// the package's own directory, so that the go command uses the module that
// holds it.
func Build(pkg, out string) error {
	rel, ok := strings.CutPrefix(pkg, repoModule+"/")
	if !ok {
		return fmt.Errorf("go build %s: not a package of %s", pkg, repoModule)
	}
	root, err := repoRoot()
	if err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(root, filepath.FromSlash(rel))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// repoRoot returns the directory of the root module: the nearest directory
// above the working directory (a test's package directory) whose go.mod
// declares repoModule.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module "+repoModule+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", repoModule)
		}
		dir = parent
	}
}

// Group is a server started in a process group of its own, whose stderr,
// and that of every process it starts (the next process of an upgrade
// inherits it), is appended to one log file, and whose pid file names the
// process serving now. Stop ends the whole chain.
type Group struct {
	LogPath, PIDFile string
	cmd              *exec.Cmd
	reaped           chan struct{} // closed once the first process is waited for
}

// StartGroup starts bin with args as the first process of a group.
func StartGroup(logPath, pidFile, bin string, args ...string) (*Group, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	defer logf.Close()
	g := &Group{LogPath: logPath, PIDFile: pidFile, cmd: exec.Command(bin, args...), reaped: make(chan struct{})}
	g.cmd.Stderr = logf
	// Its own group, so that Stop can end whatever a chain of upgrades
	// left behind, and a ^C at the terminal reaches only the caller.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	// Reaped at once, so that the first process's handover ends in
	// "gone" rather than in a zombie to tell apart.
	go func() { g.cmd.Wait(); close(g.reaped) }()
	return g, nil
}

// Pgid is the group's id: the first process's pid.
func (g *Group) Pgid() int { return g.cmd.Process.Pid }

// Exited reports whether the first process has exited, and how.
func (g *Group) Exited() (bool, *os.ProcessState) {
	select {
	case <-g.reaped:
		return true, g.cmd.ProcessState
	default:
		return false, nil
	}
}

// Signal sends sig to the first process.
func (g *Group) Signal(sig os.Signal) error { return g.cmd.Process.Signal(sig) }

// PID reads the pid file, which the server replaces by rename, so a read
// never sees half of it.
func (g *Group) PID() (int, error) {
	b, err := os.ReadFile(g.PIDFile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// ReadLog returns the log from byte offset from on.
func (g *Group) ReadLog(from int64) ([]byte, error) {
	f, err := os.Open(g.LogPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// LogSize is the log's length now, an offset for ReadLog.
func (g *Group) LogSize() int64 {
	fi, err := os.Stat(g.LogPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// LogTail returns the log's last n lines, for error messages.
func (g *Group) LogTail(n int) string {
	b, _ := g.ReadLog(0)
	lines := bytes.SplitAfter(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	return string(bytes.Join(lines[max(0, len(lines)-n):], nil)) + "\n"
}

// Stop asks pid to exit (SIGTERM; a server saves its state) and waits up
// to timeout, then kills the whole group, whatever is left of it. clean
// reports whether pid exited on SIGTERM.
func (g *Group) Stop(pid int, timeout time.Duration) (clean bool) {
	if pid > 0 && syscall.Kill(pid, syscall.SIGTERM) == nil {
		clean = Poll(context.Background(), 2*time.Millisecond, timeout, func() (bool, error) {
			return !Alive(pid), nil
		}) == nil
	}
	// Also catches a process an upgrade started and nobody waited for.
	syscall.Kill(-g.Pgid(), syscall.SIGKILL)
	<-g.reaped
	return clean
}
