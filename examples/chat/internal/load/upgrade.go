package load

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// upgradeOnSchedule sends SIGHUP to the server every cfg.UpgradeEvery,
// cfg.Upgrades times, each once the last has ended, until ctx ends; it
// returns once they are done.
func upgradeOnSchedule(ctx context.Context, cfg Config, clients []*client) []Upgrade {
	var ups []Upgrade
	start := time.Now()
	for i := 1; i <= cfg.Upgrades; i++ {
		t := time.NewTimer(time.Until(start.Add(time.Duration(i) * cfg.UpgradeEvery)))
		select {
		case <-ctx.Done():
			t.Stop()
			return ups
		case <-t.C:
		}
		u := upgradeOnce(ctx, cfg, clients)
		cfg.Logf("upgrade %d: pid %d -> %d in %v (%d signals) %s", i, u.From, u.To, u.Took.Round(time.Millisecond), u.Signals, u.Err)
		ups = append(ups, u)
	}
	return ups
}

// upgradeOnce sends SIGHUP and waits for its end: a new pid in the pid
// file and the old process gone; in restart mode, every client connected
// again. A server still taking the last upgrade's connections refuses a
// SIGHUP (and logs it): another is sent after a second in which the
// server started no new process.
func upgradeOnce(ctx context.Context, cfg Config, clients []*client) Upgrade {
	u := Upgrade{At: time.Now()}
	pid, err := readPID(cfg.PIDFile)
	if err != nil {
		u.Err = err.Error()
		return u
	}
	u.From = pid
	deadline := time.Now().Add(2 * time.Minute)
	lastHUP := time.Time{}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !cfg.Restart && time.Since(lastHUP) > time.Second && !hasChild(pid) || lastHUP.IsZero() {
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				u.Err = fmt.Sprintf("SIGHUP %d: %v", pid, err)
				return u
			}
			lastHUP = time.Now()
			u.Signals++
		}
		if done, to := upgraded(cfg, pid, u.At, clients); done {
			u.To, u.Took = to, time.Since(u.At)
			return u
		}
		time.Sleep(5 * time.Millisecond)
	}
	u.Err = "not upgraded in time"
	return u
}

// upgraded reports whether the upgrade from pid, begun at at, has ended.
func upgraded(cfg Config, pid int, at time.Time, clients []*client) (bool, int) {
	if cfg.Restart {
		for _, c := range clients {
			if s := c.since.Load(); s == 0 || s < at.UnixNano() {
				return false, 0
			}
		}
		return true, pid
	}
	to, err := readPID(cfg.PIDFile)
	if err != nil || to == pid || alive(pid) {
		return false, 0
	}
	return true, to
}

// hasChild reports whether pid has a child process: the new process of
// an upgrade under way.
func hasChild(pid int) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		if b, err := os.ReadFile(t); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return true
		}
	}
	return false
}

// alive reports whether pid runs: a zombie (exited, its parent has not
// waited for it yet) does not.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(rest, "Z")
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("pid file %s: %w", path, err)
	}
	return pid, nil
}
