package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/internal/controlwire"
)

// envRun makes the test binary run as the idle command (TestMain), so that
// a test can start it as a process of its own and signal it.
const envRun = "IDLE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRun) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// ask sends one request line to the control socket at path and decodes
// the one answer line into v, returning its type.
func ask(t *testing.T, path, line string, v any) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	b, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	var head struct{ Type string }
	if err := json.Unmarshal(b, &head); err != nil || json.Unmarshal(b, v) != nil {
		t.Fatalf("%q: answered %q", line, b)
	}
	return head.Type
}

func statusLine() string { return controlwire.Request{Command: controlwire.CommandStatus}.Line() }

// TestIdleProcess runs the command as its own process with the pdf
// server's arguments, as the SidecarSet's empty container does: it says
// when it answers, answers status with phase handed-over and its pid, and
// exits 0 on SIGTERM, removing its socket.
func TestIdleProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.ctl")
	cmd := exec.Command(os.Args[0], "-listen", "0.0.0.0:7070", "-control", path, "-state", "/var/lib/pdf/ledger", "-snapshot", "5s")
	cmd.Env = append(os.Environ(), envRun+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	log := bufio.NewReader(stderr)
	if line, err := log.ReadString('\n'); err != nil || !strings.Contains(line, "answering status as handed-over") {
		t.Fatalf("first log line %q (%v), want it answering", line, err)
	}
	var st controlwire.Status
	if typ := ask(t, path, statusLine(), &st); typ != controlwire.TypeStatus ||
		st.Phase != handoff.ProcessHandedOver || st.PID != cmd.Process.Pid {
		t.Fatalf("status: %s %+v, want phase %s of pid %d", typ, st, handoff.ProcessHandedOver, cmd.Process.Pid)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(log)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v, want exit 0; log:\n%s", err, rest)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the socket is left after the exit: %v", err)
	}
}

// TestIdleRefuses: every request but status is refused with why, and a
// stale socket file at the path is replaced.
func TestIdleRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.ctl")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	s, err := listen(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer s.close()
	for _, line := range []string{
		controlwire.Request{Command: controlwire.CommandUpgrade}.Line(),
		"GET / HTTP/1.1",
		controlwire.Magic + " 2 status",
	} {
		var e controlwire.Error
		if typ := ask(t, path, line, &e); typ != controlwire.TypeError || e.Error == "" {
			t.Errorf("%q: %s %+v, want an error saying why", line, typ, e)
		}
	}
}

// TestControlArg: -control is found among the server's other arguments,
// in each of the flag package's forms.
func TestControlArg(t *testing.T) {
	for _, tc := range []struct {
		args []string
		path string
		help bool
	}{
		{[]string{"-listen", "0.0.0.0:7070", "-control", "/tmp/handoff.ctl", "-state", "/s"}, "/tmp/handoff.ctl", false},
		{[]string{"--control", "/a"}, "/a", false},
		{[]string{"-control=/a", "-snapshot", "5s"}, "/a", false},
		{[]string{"-control", "/a", "-control", "/b"}, "/b", false},
		{[]string{"-listen", "x"}, "", false},
		{[]string{"-control"}, "", false},
		{[]string{"-h"}, "", true},
	} {
		if path, help := controlArg(tc.args); path != tc.path || help != tc.help {
			t.Errorf("%q: %q %v, want %q %v", tc.args, path, help, tc.path, tc.help)
		}
	}
}

// TestNoControl: without -control there is nothing to answer on: a usage
// error, not an idle process the probes cannot reach.
func TestNoControl(t *testing.T) {
	var stderr strings.Builder
	if code := run([]string{"-listen", "x"}, nil, &stderr); code != 2 || !strings.Contains(stderr.String(), "no -control") {
		t.Errorf("exit %d, log %q, want 2 and why", code, stderr.String())
	}
}
