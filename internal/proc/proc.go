// Package proc holds the few process chores that the demo and the
// benchmark, which both drive real server processes from outside, share:
// telling whether a pid still runs, waiting for a condition, and deploying
// a binary the way a package manager does.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// Alive reports whether pid runs. A zombie counts as gone: a process
// reparented to an init that is slow to reap stays one a while.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The command name, in parentheses, may hold spaces; the state
	// follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
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

// Build compiles the package with import path pkg (of this module, so the
// caller's directory does not matter) into the executable out, for tests
// that run real binaries.
func Build(pkg, out string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}
