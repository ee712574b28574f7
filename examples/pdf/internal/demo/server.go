package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
)

// pollEvery is how often the demo looks at the pid file, /proc and the log.
const pollEvery = 2 * time.Millisecond

// stopTimeout bounds the wait for a server to save its state and exit on
// SIGTERM before its process group is killed.
const stopTimeout = 10 * time.Second

// server is the chain of server processes, seen from outside: the first
// one is our child, the later ones are started by their predecessor and
// share its process group.
type server struct {
	dir     string
	addr    string
	pgid    int
	cmd     *exec.Cmd
	reaped  chan struct{} // closed once the first process is waited for
	bin     string        // the deployed binary, replaced at each upgrade
	pidfile string
	logPath string
}

func newServer(dir, addr string) *server {
	return &server{
		dir: dir, addr: addr, reaped: make(chan struct{}),
		bin:     filepath.Join(dir, "pdf"),
		pidfile: filepath.Join(dir, "pdf.pid"),
		logPath: filepath.Join(dir, "server.log"),
	}
}

// start starts the deployed binary and waits until it is ready: its pid
// in the pid file and the port accepting.
func (s *server) start(ctx context.Context, timeout time.Duration) (pid int, err error) {
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("demo: server log: %w", err)
	}
	// Every later process inherits this stderr, so the log is the chain's.
	defer logf.Close()
	s.cmd = exec.Command(s.bin, "-listen", s.addr, "-pidfile", s.pidfile,
		"-state", filepath.Join(s.dir, "state"))
	s.cmd.Stderr = logf
	// Its own group, so that the end of the demo can stop whatever the
	// chain of upgrades left behind, and a ^C at the terminal reaches only us.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return 0, fmt.Errorf("demo: start server: %w", err)
	}
	s.pgid = s.cmd.Process.Pid
	// Reaped at once, so that the first process's handover ends in
	// "gone" rather than in a zombie we would have to tell apart.
	go func() { s.cmd.Wait(); close(s.reaped) }()
	if err := s.awaitReady(ctx, timeout); err != nil {
		return 0, err
	}
	return s.pgid, nil
}

func (s *server) awaitReady(ctx context.Context, timeout time.Duration) error {
	ready := func() (bool, error) {
		select {
		case <-s.reaped:
			return false, fmt.Errorf("server exited at start: %v", s.cmd.ProcessState)
		default:
		}
		pid, _ := s.readPID()
		return pid == s.pgid && accepts(s.addr), nil
	}
	if err := proc.Poll(ctx, pollEvery, timeout, ready); err != nil {
		return fmt.Errorf("demo: server not ready: %w; log:\n%s", err, s.logTail(20))
	}
	return nil
}

func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// readPID reads the pid file, which the server replaces by rename, so a
// read never sees half of it.
func (s *server) readPID() (int, error) {
	b, err := os.ReadFile(s.pidfile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// awaitHandover waits until the pid file names a process other than old
// and old is gone, and returns the new pid.
func (s *server) awaitHandover(ctx context.Context, old int, timeout time.Duration) (int, error) {
	var pid int
	err := proc.Poll(ctx, pollEvery, timeout, func() (bool, error) {
		pid, _ = s.readPID()
		return pid != 0 && pid != old && !proc.Alive(old), nil
	})
	if err != nil {
		return pid, fmt.Errorf("no handover from pid %d (pid file says %d, old alive: %v): %w",
			old, pid, proc.Alive(old), err)
	}
	return pid, nil
}

// awaitFailure waits until old logs, after byte offset from of the log,
// that its upgrade failed.
func (s *server) awaitFailure(ctx context.Context, old int, from int64, timeout time.Duration) error {
	err := proc.Poll(ctx, pollEvery, timeout, func() (bool, error) {
		return s.loggedFailure(old, from), nil
	})
	if err != nil {
		return fmt.Errorf("pid %d logged no failed upgrade: %w", old, err)
	}
	return nil
}

func (s *server) loggedFailure(pid int, from int64) bool {
	b, _ := s.readLog(from)
	tag := "pid=" + strconv.Itoa(pid)
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, "upgrade failed") && containsField(line, tag) {
			return true
		}
	}
	return false
}

// containsField matches whole fields so that pid=12 does not match pid=123.
func containsField(line, field string) bool {
	for _, f := range strings.Fields(line) {
		if f == field {
			return true
		}
	}
	return false
}

func (s *server) logSize() int64 {
	fi, err := os.Stat(s.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (s *server) readLog(from int64) ([]byte, error) {
	f, err := os.Open(s.logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

func (s *server) logTail(n int) string {
	b, _ := s.readLog(0)
	lines := bytes.SplitAfter(b, []byte("\n"))
	return string(bytes.Join(lines[max(0, len(lines)-n):], nil))
}

// stop asks pid to save its state and exit, then kills the whole group,
// whatever is left of it. clean reports whether pid exited on SIGTERM.
func (s *server) stop(pid int) (clean bool) {
	if s.cmd == nil || s.cmd.Process == nil {
		return false
	}
	if pid > 0 && syscall.Kill(pid, syscall.SIGTERM) == nil {
		clean = proc.Poll(context.Background(), pollEvery, stopTimeout, func() (bool, error) {
			return !proc.Alive(pid), nil
		}) == nil
	}
	// Also catches a process an upgrade started and nobody waited for.
	syscall.Kill(-s.pgid, syscall.SIGKILL)
	<-s.reaped
	return clean
}
