package main

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/proc"
)

// becomeSubreaper makes the servers' orphans this process's children, so
// that they stay zombies (with their CPU times) until reaped.
func becomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl PR_SET_CHILD_SUBREAPER", err)
	}
	return nil
}

// sample is the servers' total CPU at a time.
type sample struct {
	at  time.Time
	cpu time.Duration
}

// sampler follows the server processes (the pids the pid file names, in
// turn) and samples their total CPU every period.
type sampler struct {
	pidfile string
	mu      sync.Mutex
	pids    map[int]time.Duration // last CPU seen of each server process
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

func newSampler(pidfile string, first int, period time.Duration) *sampler {
	s := &sampler{pidfile: pidfile, pids: map[int]time.Duration{first: 0},
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop(period)
	return s
}

func (s *sampler) loop(period time.Duration) {
	defer close(s.done)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		s.take()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *sampler) take() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, err := os.ReadFile(s.pidfile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			if _, ok := s.pids[pid]; !ok {
				s.pids[pid] = 0
			}
		}
	}
	var total time.Duration
	for pid, last := range s.pids {
		// A zombie's times stay readable (becomeSubreaper); one that is
		// gone reads 0 and keeps its last.
		if cpu := proc.CPUTime(pid); cpu > 0 {
			s.pids[pid] = cpu
			last = cpu
		}
		total += last
	}
	s.samples = append(s.samples, sample{time.Now(), total})
}

func (s *sampler) end() []sample {
	close(s.stop)
	<-s.done
	s.take()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

// cpuAt is the total CPU at t, from the last sample at or before it.
func cpuAt(ss []sample, t time.Time) time.Duration {
	var c time.Duration
	for _, s := range ss {
		if s.at.After(t) {
			break
		}
		c = s.cpu
	}
	return c
}

// reapAll waits for every exited child (the zombie servers) without
// blocking.
func reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
