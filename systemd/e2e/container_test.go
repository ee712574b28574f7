//go:build e2esystemd

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Bounds of the container's life.
const (
	bootTimeout     = 60 * time.Second // nspawn started to running/degraded
	poweroffTimeout = 20 * time.Second // poweroff to nspawn gone, before SIGKILL
	cmdTimeout      = 60 * time.Second // one command in the container
)

// containerPath is PATH for commands run in the container: the host's
// may name directories the container lacks.
const containerPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var machines atomic.Int32

// container is one boot of the cached root, with systemd as its PID 1 and
// the host's network. The root is the lower layer of an overlay whose
// upper layer is a tmpfs (--volatile=overlay): each boot starts from the
// root as setup left it, and nothing it writes outlives it.
type container struct {
	t       testing.TB
	name    string
	opt     string  // the host directory mounted at /opt/pdf (install)
	console string  // nspawn's output: the console and its own messages
	cgroup  *cgroup // the container's own, nspawn's included
	nspawn  *exec.Cmd
	exited  chan struct{} // closed once nspawn is reaped
	pid1    int           // the container's systemd, as the host sees it
}

// boot installs the pdf release (install), boots the cached root with it
// and waits until systemd says running or degraded. Cleanup powers the
// container off (SIGKILL if that hangs) and removes what it left; a
// failed test gets the console and the journal first.
func boot(t testing.TB) *container {
	t.Helper()
	requirePortFree(t)
	dir := t.TempDir()
	c := &container{
		t:       t,
		name:    fmt.Sprintf("pdf-e2e-%d-%d", os.Getpid(), machines.Add(1)),
		console: filepath.Join(dir, "console.log"),
		exited:  make(chan struct{}),
	}
	binds := install(t, dir)

	start := time.Now()
	log, err := os.Create(c.console)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if c.cgroup, err = newCgroup(c.name); err != nil {
		t.Fatal(err)
	}
	// --register=no --keep-unit: the host has no systemd as PID 1 to
	// register with. No --private-network: 127.0.0.1 is the host's.
	args := c.cgroup.wrap(append([]string{"systemd-nspawn", "--register=no", "--keep-unit", "--machine=" + c.name,
		"-D", env.root, "--volatile=overlay", "-b", "--console=pipe"}, binds...)...)
	c.nspawn = exec.Command(args[0], args[1:]...)
	c.nspawn.Stdout, c.nspawn.Stderr = log, log
	if err := c.nspawn.Start(); err != nil {
		c.cgroup.remove()
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	go func() {
		c.nspawn.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.teardown)
	if err := c.awaitPID1(); err != nil {
		t.Fatalf("container %s: %v", c.name, err)
	}
	state, err := c.awaitRunning()
	if err != nil {
		t.Fatalf("container %s: systemd did not reach running or degraded within %v: %v", c.name, bootTimeout, err)
	}
	t.Logf("container %s: booted to %q in %v (systemd is pid %d on the host)",
		c.name, state, time.Since(start).Round(time.Millisecond), c.pid1)
	if state == "degraded" {
		out, _, _ := c.exec("systemctl", "--failed", "--no-pager")
		t.Logf("degraded: failed units:\n%s", out)
	}
	return c
}

// requirePortFree fails if something on the host already serves the
// unit's address: the container shares the host's network.
func requirePortFree(t testing.TB) {
	t.Helper()
	if accepts(addr) {
		t.Fatalf("%s already accepts connections on the host; the container shares the host's network, so the test cannot own it", addr)
	}
}

// awaitPID1 finds the container's init: the child of nspawn that is pid 1
// in its own pid namespace.
func (c *container) awaitPID1() error {
	deadline := time.Now().Add(bootTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("systemd-nspawn exited during boot: %v", c.nspawn.ProcessState)
		default:
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.nspawn.Process.Pid, c.nspawn.Process.Pid))
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			if nsPID(pid) == 1 {
				c.pid1 = pid
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no init in a pid namespace of its own under systemd-nspawn (pid %d) after %v",
		c.nspawn.Process.Pid, bootTimeout)
}

// nsPID is pid's number in its innermost pid namespace, 0 if unknown.
func nsPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

// awaitRunning waits until systemctl is-system-running says running or
// degraded, and returns which.
func (c *container) awaitRunning() (string, error) {
	deadline := time.Now().Add(bootTimeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return last, fmt.Errorf("systemd-nspawn exited during boot: %v", c.nspawn.ProcessState)
		default:
		}
		out, _, _ := c.exec("systemctl", "is-system-running")
		last = strings.TrimSpace(out)
		// "offline" too is what it says before systemd listens.
		switch last {
		case "running", "degraded":
			return last, nil
		case "maintenance":
			return last, fmt.Errorf("is-system-running says %q", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last, fmt.Errorf("is-system-running still says %q", last)
}

// exec runs args in every namespace of the container, bounded by
// cmdTimeout, and returns its output (stdout and stderr as they came) and
// exit status. err is set only if it could not run or did not finish.
func (c *container) exec(args ...string) (out string, status int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.pid1), "-a", "--"}, args...)...)
	cmd.Env = []string{"PATH=" + containerPath, "LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "TERM=dumb"}
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return b.String(), -1, fmt.Errorf("%s: no exit within %v", strings.Join(args, " "), cmdTimeout)
	case errors.As(err, &exit):
		return b.String(), exit.ExitCode(), nil
	case err != nil:
		return b.String(), -1, fmt.Errorf("nsenter %s: %w", strings.Join(args, " "), err)
	}
	return b.String(), 0, nil
}

// must runs args in the container and fails the test unless it exits 0.
func (c *container) must(args ...string) string {
	c.t.Helper()
	out, status, err := c.exec(args...)
	if err != nil || status != 0 {
		c.t.Fatalf("in the container: %s: exit status %d, %v\n%s", strings.Join(args, " "), status, err, out)
	}
	return out
}

// teardown shows what happened if the test failed, powers the container
// off and makes sure nothing of it runs on.
func (c *container) teardown() {
	if c.t.Failed() {
		c.dump()
	}
	start := time.Now()
	if !c.poweroff() {
		c.nspawn.Process.Signal(syscall.SIGTERM) // nspawn asks the container's init to power off
	}
	select {
	case <-c.exited:
		if c.pid1 != 0 {
			c.t.Logf("container %s: powered off in %v", c.name, time.Since(start).Round(time.Millisecond))
		}
	case <-time.After(poweroffTimeout):
		c.t.Errorf("container %s: still running %v after poweroff; killing it", c.name, poweroffTimeout)
		c.cgroup.kill() // the container and nspawn
		select {
		case <-c.exited:
		case <-time.After(poweroffTimeout):
			c.t.Errorf("container %s: systemd-nspawn (pid %d) survives SIGKILL", c.name, c.nspawn.Process.Pid)
		}
	}
	if err := c.cgroup.remove(); err != nil {
		c.t.Errorf("container %s: %v", c.name, err)
	}
	c.removeNspawnState()
}

// removeNspawnState removes what a killed nspawn leaves in /run: the
// directory it propagates mounts through, named after the machine.
func (c *container) removeNspawnState() {
	os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", c.name))
}

// poweroff asks systemd to power the container off, and reports whether
// it took the request.
func (c *container) poweroff() bool {
	if c.pid1 == 0 {
		return false
	}
	_, status, err := c.exec("systemctl", "poweroff")
	return err == nil && status == 0
}

// dump logs the console and, if systemd runs, the tail of this boot's
// journal and the pdf units' status.
func (c *container) dump() {
	if b, err := os.ReadFile(c.console); err == nil {
		c.t.Logf("container %s: console and systemd-nspawn output:\n%s", c.name, tail(string(b), 60))
	}
	if c.pid1 == 0 {
		return
	}
	for _, args := range [][]string{
		{"systemctl", "status", "--no-pager", "--lines=0", "pdf.service", "pdf.socket"},
		{"journalctl", "-b", "--no-pager", "-n", "150"},
	} {
		out, _, err := c.exec(args...)
		c.t.Logf("container %s: %s (%v):\n%s", c.name, strings.Join(args, " "), err, out)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}
