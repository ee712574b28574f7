package demo

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
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
// share its process group (proc.Group).
type server struct {
	*proc.Group
	dir  string
	addr string
	bin  string // the deployed binary, replaced at each upgrade
	// control is the control socket handoffctl talks to; metricsAddr
	// serves /metrics, set by start. Both are inherited across upgrades.
	control     string
	metricsAddr string
}

func newServer(dir, addr string) *server {
	return &server{dir: dir, addr: addr, bin: filepath.Join(dir, "pdf"), control: filepath.Join(dir, "control.sock")}
}

// start starts the deployed binary, with a control socket and metrics on
// a free port, and waits until it is ready: its pid in the pid file and
// the port accepting.
func (s *server) start(ctx context.Context, timeout time.Duration) (pid int, err error) {
	if s.metricsAddr, err = freeAddr(); err != nil {
		return 0, err
	}
	s.Group, err = proc.StartGroup(filepath.Join(s.dir, "server.log"), filepath.Join(s.dir, "pdf.pid"),
		s.bin, "-listen", s.addr, "-pidfile", filepath.Join(s.dir, "pdf.pid"), "-state", filepath.Join(s.dir, "state"),
		"-control", s.control, "-metrics", s.metricsAddr)
	if err != nil {
		return 0, fmt.Errorf("demo: %w", err)
	}
	if err := s.awaitReady(ctx, timeout); err != nil {
		return 0, err
	}
	return s.Pgid(), nil
}

func (s *server) awaitReady(ctx context.Context, timeout time.Duration) error {
	ready := func() (bool, error) {
		if exited, st := s.Exited(); exited {
			return false, fmt.Errorf("server exited at start: %v", st)
		}
		pid, _ := s.PID()
		return pid == s.Pgid() && accepts(s.addr), nil
	}
	if err := proc.Poll(ctx, pollEvery, timeout, ready); err != nil {
		return fmt.Errorf("demo: server not ready: %w; log:\n%s", err, s.LogTail(20))
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

// awaitHandover waits until the pid file names a process other than old
// and old is gone, and returns the new pid.
func (s *server) awaitHandover(ctx context.Context, old int, timeout time.Duration) (int, error) {
	var pid int
	err := proc.Poll(ctx, pollEvery, timeout, func() (bool, error) {
		pid, _ = s.PID()
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
	b, _ := s.ReadLog(from)
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

// stop asks pid to save its state and exit, then ends the whole group.
// clean reports whether pid exited on SIGTERM.
func (s *server) stop(pid int) (clean bool) {
	return s.Stop(pid, stopTimeout)
}
