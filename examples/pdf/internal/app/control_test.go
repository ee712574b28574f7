package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
	"github.com/handoff-dev/handoff/internal/proc"
)

// buildCtl builds handoffctl into dir.
func buildCtl(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "handoffctl")
	if err := proc.Build("github.com/handoff-dev/handoff/cmd/handoffctl", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// ctl runs handoffctl (as cred, if not nil) and returns its exit status,
// stdout and stderr.
func ctl(t *testing.T, bin string, cred *syscall.Credential, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	status := 0
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatal(err)
		}
		status = exit.ExitCode()
	}
	return status, stdout.String(), stderr.String()
}

// ctlStatus is the part of the status answer the tests look at.
type ctlStatus struct {
	Type       string `json:"type"`
	PID        int    `json:"pid"`
	Version    string `json:"version"`
	Generation uint64 `json:"generation"`
	Totals     struct {
		Committed  uint64            `json:"committed"`
		RolledBack map[string]uint64 `json:"rolled_back"`
	} `json:"totals"`
}

func status(t *testing.T, bin string, args ...string) ctlStatus {
	t.Helper()
	code, out, errOut := ctl(t, bin, nil, append([]string{"status", "-json"}, args...)...)
	var st ctlStatus
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.Type != "status" {
		t.Fatalf("status: exit %d, %v\nstdout:\n%s\nstderr:\n%s", code, err, out, errOut)
	}
	return st
}

func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestControlUpgrade: handoffctl upgrade exits 0 only on a commit, and
// non-zero with the reason when the new binary exits at once or hangs past
// the timeout; the server serves on, counts both rollbacks, and after the
// commit its successor answers on the same socket, with the counts.
func TestControlUpgrade(t *testing.T) {
	dir := t.TempDir()
	bin := buildCtl(t, dir)
	sock := filepath.Join(dir, "run", "pdf.sock") // run/ does not exist: the server makes it
	p := startPDF(t, modeFull, "-control", sock)
	c := pdftest.Dial(t, p.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")

	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory: %v, %v; want mode 0700", fi, err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v, %v; want mode 0600", fi, err)
	}
	if st := status(t, bin, "-socket", sock); st.PID != p.pid || st.Generation != 0 {
		t.Fatalf("status %+v, want pid %d generation 0", st, p.pid)
	}

	for _, tc := range []struct {
		name, body string
		args       []string
		cause      string
	}{
		{"exits at once", "exit 3", nil, "exited"},
		{"hangs", "sleep 1000", []string{"-timeout", "1s"}, "timeout"},
	} {
		bad := script(t, dir, strings.ReplaceAll(tc.name, " ", "-"), tc.body)
		args := append([]string{"upgrade", "-socket", sock, "-binary", bad}, tc.args...)
		code, out, errOut := ctl(t, bin, nil, args...)
		want := "handoffctl: upgrade rolled back (" + tc.cause + "): "
		if code != 1 || !strings.HasPrefix(errOut, want) || strings.Count(errOut, "\n") != 1 {
			t.Fatalf("%s: exit %d, stderr %q, want 1 and one line starting %q\nstdout:\n%s", tc.name, code, errOut, want, out)
		}
		c.Ask(t, "BALANCE 2 alice", "BAL 2 100")
		if st := status(t, bin, "-socket", sock); st.Totals.RolledBack[tc.cause] != 1 {
			t.Fatalf("%s: status %+v, want rolled_back %s 1", tc.name, st, tc.cause)
		}
	}

	p.setVersion(t, "v2")
	code, out, errOut := ctl(t, bin, nil, "upgrade", "-socket", sock)
	if code != 0 || !strings.Contains(out, "phase ready: ") || !strings.Contains(out, "committed: pid ") {
		t.Fatalf("upgrade: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	newPid := p.readPidfile(t)
	c.Ask(t, "VERSION 3", fmt.Sprintf("VERSION 3 v2.0.0 %d", newPid))
	st := status(t, bin, "-socket", sock)
	if st.PID != newPid || newPid == p.pid || st.Generation != 1 || st.Version != "v2.0.0" || st.Totals.Committed != 1 ||
		st.Totals.RolledBack["exited"] != 1 || st.Totals.RolledBack["timeout"] != 1 {
		t.Fatalf("status after the upgrade: %+v, want pid %d generation 1, 1 committed, the rollbacks carried", st, newPid)
	}
	// The same socket, found from the pid file.
	if code, out, errOut := ctl(t, bin, nil, "status", "-pidfile", p.pidfile); code != 0 ||
		!strings.Contains(out, fmt.Sprintf("pid:          %d\n", newPid)) || !strings.Contains(out, "generation:   1\n") {
		t.Fatalf("status -pidfile: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	p.stop(t, newPid)
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after the stop: %v, want it removed", err)
	}
	code, _, errOut = ctl(t, bin, nil, "status", "-socket", sock)
	if code != 3 {
		t.Errorf("status of a stopped server: exit %d, want 3\nstderr:\n%s", code, errOut)
	}
}

// raw sends req on the control socket and returns what the server answers
// before it closes the connection.
func raw(t *testing.T, sock string, req []byte) string {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write(req) // an oversized one may not be read through
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestControlRefuses: another uid, garbage, an oversized and a half-written
// command, and more connections than the bound are refused with a reason,
// and the server serves its clients throughout.
func TestControlRefuses(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("runs the client as nobody: needs root")
	}
	dir := t.TempDir()
	bin := buildCtl(t, dir)
	sock := filepath.Join(dir, "run", "pdf.sock")
	p := startPDF(t, modeFull, "-control", sock)
	c := pdftest.Dial(t, p.addr)
	c.Ask(t, "TOPUP 1 alice 100", "OK 1 100")
	serves := func() { t.Helper(); c.Ask(t, "BALANCE 2 alice", "BAL 2 100") }

	// Let nobody reach the binary and the socket's directory: the socket's
	// own mode (0600) stops it first.
	for _, d := range []string{filepath.Dir(dir), dir, filepath.Dir(sock)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	code, _, errOut := ctl(t, bin, nobody, "status", "-socket", sock)
	if code != 3 || !strings.Contains(errOut, "permission denied") {
		t.Fatalf("nobody, socket 0600: exit %d, want 3 (unreachable)\nstderr:\n%s", code, errOut)
	}
	// With the socket file open to all, the peer check itself refuses.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := ctl(t, bin, nobody, "status", "-socket", sock)
	if code != 4 || !strings.Contains(errOut, "peer uid 65534") || out != "" {
		t.Fatalf("nobody, socket 0666: exit %d, want 4 (refused)\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	serves()

	for _, tc := range []struct {
		name string
		req  []byte
		want string
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "control characters"},
		{"newer version", []byte("HANDOFF-CONTROL 2 status\n"), "protocol version"},
		{"oversized", bytes.Repeat([]byte("x"), 64<<10), "longer than 4095 bytes"},
		{"unknown", []byte("HANDOFF-CONTROL 1 reboot\n"), "unknown command"},
	} {
		got := raw(t, sock, tc.req)
		if !strings.HasPrefix(got, `{"type":"error","error":`) || !strings.Contains(got, tc.want) {
			t.Errorf("%s: answer %q, want an error saying %q", tc.name, got, tc.want)
		}
		serves()
	}

	// Half-written commands hold every slot until their deadline; one
	// more connection is refused as busy meanwhile, and the slots free.
	var held []net.Conn
	for range 8 {
		h, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if _, err := h.Write([]byte("HANDOFF-CONTROL 1 sta")); err != nil {
			t.Fatal(err)
		}
		held = append(held, h)
	}
	// The server takes a slot when it accepts; a status answered means
	// every earlier connection was accepted, unless it says busy.
	got := raw(t, sock, []byte("HANDOFF-CONTROL 1 status\n"))
	if !strings.Contains(got, "busy") {
		t.Errorf("a 9th connection: %q, want busy", got)
	}
	serves()
	for _, h := range held {
		h.SetReadDeadline(time.Now().Add(60 * time.Second))
		b, _ := io.ReadAll(h)
		if !strings.Contains(string(b), "no complete command line") {
			t.Errorf("half-written command: %q, want an error saying so", b)
		}
	}
	serves()
	if st := status(t, bin, "-socket", sock); st.PID != p.pid {
		t.Fatalf("status after the refusals: %+v", st)
	}

	// A crash leaves the socket file; the next cold start replaces it.
	syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("socket file after SIGKILL: %v", err)
	}
	q := startIn(t, p.dir, modeFull, "-control", sock, "-state-accept-stale")
	if st := status(t, bin, "-socket", sock); st.PID != q.pid {
		t.Fatalf("status after a crash and a start: %+v, want pid %d", st, q.pid)
	}
}
