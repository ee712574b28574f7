package proc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Not waited for yet, so it lingers as a zombie: exited, hence gone.
	err := Poll(context.Background(), time.Millisecond, 10*time.Second, func() (bool, error) { return !Alive(pid), nil })
	if err != nil {
		t.Errorf("exited child %d still alive", pid)
	}
	cmd.Wait()
	if Alive(pid) {
		t.Errorf("reaped child %d alive", pid)
	}
}

func TestPollTimesOut(t *testing.T) {
	err := Poll(context.Background(), time.Millisecond, 20*time.Millisecond, func() (bool, error) { return false, nil })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
}

func TestInstallReplaces(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "bin")
	for _, want := range []string{"one", "two"} {
		if err := Install(dst, strings.NewReader(want)); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dst); string(got) != want {
			t.Fatalf("%s holds %q, want %q", dst, got, want)
		}
	}
	if info, _ := os.Stat(dst); info.Mode().Perm()&0o100 == 0 {
		t.Fatalf("mode %v is not executable", info.Mode())
	}
	if _, err := os.Stat(dst + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("temporary file left behind")
	}
}

// TestGroup runs a real chain: a shell that writes its pid file, logs,
// and leaves a process of its own behind, as an upgrade does. Stop ends
// the first on SIGTERM and the one left behind with the group.
func TestGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile, left := filepath.Join(dir, "pid"), filepath.Join(dir, "left")
	script := `trap 'exit 0' TERM
echo $$ > ` + pidFile + `.new && mv ` + pidFile + `.new ` + pidFile + `
sleep 60 & echo $! > ` + left + `
echo "started" >&2
while :; do sleep 0.01; done`
	g, err := StartGroup(filepath.Join(dir, "log"), pidFile, "/bin/sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	var leftPid int
	err = Poll(context.Background(), time.Millisecond, 10*time.Second, func() (bool, error) {
		b, _ := os.ReadFile(left)
		leftPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return leftPid > 0 && strings.Contains(g.LogTail(1), "started"), nil
	})
	if err != nil {
		t.Fatalf("group did not start: %v; log %q", err, g.LogTail(5))
	}
	if pid, err := g.PID(); err != nil || pid != g.Pgid() {
		t.Fatalf("pid file says %d (%v), want the first process %d", pid, err, g.Pgid())
	}
	if exited, _ := g.Exited(); exited {
		t.Fatal("exited before Stop")
	}
	if !g.Stop(g.Pgid(), 10*time.Second) {
		t.Error("the first process did not exit on SIGTERM")
	}
	if exited, st := g.Exited(); !exited || !st.Success() {
		t.Errorf("after Stop: exited %v, state %v; want a clean exit", exited, st)
	}
	if err := Poll(context.Background(), time.Millisecond, 5*time.Second, func() (bool, error) { return !Alive(leftPid), nil }); err != nil {
		t.Errorf("pid %d, left behind in the group, still runs after Stop", leftPid)
	}
}

// TestUsage reads this process's own figures from /proc.
func TestUsage(t *testing.T) {
	self := os.Getpid()
	if rss, err := StatusBytes(self, "VmRSS"); err != nil || rss < 1<<20 {
		t.Errorf("VmRSS %d, %v: want over 1 MiB", rss, err)
	}
	if _, err := StatusBytes(self, "NoSuchField"); err == nil {
		t.Error("a missing field was found")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	before := OpenFds(self)
	after := OpenFds(self) // the same, while f stays open
	f.Close()
	if before < 4 || after != before || OpenFds(self) != before-1 {
		t.Errorf("open fds %d, %d, then %d after a close: want >= 4, equal, one fewer", before, after, OpenFds(self))
	}
	start := CPUTime(self)
	for deadline := time.Now().Add(100 * time.Millisecond); time.Now().Before(deadline); {
	}
	if used := CPUTime(self) - start; used <= 0 {
		t.Errorf("CPU time grew by %v over 100 ms of spinning", used)
	}
}
