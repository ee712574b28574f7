package demo_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
)

// coldServer is one pdf server process started with a state file.
type coldServer struct {
	cmd  *exec.Cmd
	addr string
	done chan error
}

// startCold starts binary on a free port with the state file and flags,
// and waits for its "serving" log line, which names the address.
func startCold(t *testing.T, binary, state string, flags ...string) *coldServer {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"-listen", "127.0.0.1:0", "-state", state}, flags...)...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &coldServer{cmd: cmd, done: make(chan error, 1)}
	addr := make(chan string, 1)
	var logs strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if _, a, ok := strings.Cut(sc.Text(), " addr="); ok && strings.Contains(sc.Text(), "msg=serving") {
				addr <- strings.Fields(a)[0]
			}
		}
		s.done <- cmd.Wait()
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatalf("%s exited before serving: %v\n%s", binary, <-s.done, logs.String())
		}
		s.addr = a
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%s did not start serving", binary)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return s
}

// ask sends each request on a new connection and checks its reply.
func (s *coldServer) ask(t *testing.T, pairs ...string) {
	t.Helper()
	c := pdftest.Dial(t, s.addr)
	for i := 0; i < len(pairs); i += 2 {
		c.Ask(t, pairs[i], pairs[i+1])
	}
	c.Close()
}

// term stops the server the way an operator does and requires a clean exit.
func (s *coldServer) term(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30 s after SIGTERM")
	}
}

// TestColdRestart: kill -TERM, then a fresh start of either version
// restores every balance and charge count from the state file; a
// corrupted state file is moved aside and the start refuses, until
// -state-reset starts the server empty on purpose.
func TestColdRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the servers")
	}
	bin := buildServers(t)
	v1, v2 := filepath.Join(bin, "pdf-v1"), filepath.Join(bin, "pdf-v2")
	state := filepath.Join(t.TempDir(), "state")

	s := startCold(t, v1, state)
	s.ask(t, "TOPUP 1 alice 100", "OK 1 100", "CHARGE 2 alice 30", "OK 2 70",
		"CHARGE 3 alice 20", "OK 3 50", "TOPUP 4 bob 5", "OK 4 5",
		"CHARGE 5 bob 1", "OK 5 4", "CHARGE 6 carol 1", "DENY 6 0")
	s.term(t)

	s = startCold(t, v2, state) // up: schema 1 → 2
	s.ask(t, "STATS 1 alice", "STATS 1 50 2", "STATS 2 bob", "STATS 2 4 1",
		"STATS 3 carol", "STATS 3 0 0", "CHARGE 4 alice 10", "OK 4 40")
	s.term(t)

	s = startCold(t, v1, state) // down: schema 2 → 1
	s.ask(t, "BALANCE 1 alice", "BAL 1 40", "BALANCE 2 bob", "BAL 2 4")
	s.term(t)

	s = startCold(t, v2, state) // the count survived the trip down
	s.ask(t, "STATS 1 alice", "STATS 1 40 3")
	s.term(t)

	file, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	file[len(file)/2] ^= 0x01
	os.WriteFile(state, file, 0o600)
	out, err := exec.Command(v2, "-listen", "127.0.0.1:0", "-state", state).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "-state-reset") {
		t.Fatalf("start over a corrupt file: %v, want exit code 1 and -state-reset named\n%s", err, out)
	}
	aside, _ := filepath.Glob(state + ".corrupt-*")
	if _, err := os.Stat(state); len(aside) != 1 || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupt file not moved aside: %v, %v", aside, err)
	}
	s = startCold(t, v2, state, "-state-reset")
	s.ask(t, "BALANCE 1 alice", "BAL 1 0")
	s.term(t)
}
