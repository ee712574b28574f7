package proc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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
