package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/internal/controlwire"
)

// shared is the one Upgrader a test process may have, with a control
// socket: a first process answers on it from New on.
var shared struct {
	once sync.Once
	path string
	err  error
}

// controlServer returns the path of the control socket of this process's
// Upgrader, made at the first call.
func controlServer(t *testing.T) string {
	t.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "handoffctl-test-")
		if err != nil {
			shared.err = err
			return
		}
		shared.path = filepath.Join(dir, "ctl", "control.sock")
		_, shared.err = handoff.New(handoff.Options{ControlSocket: shared.path, NoSignal: true, Version: "vtest",
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.path
}

// runCtl runs handoffctl's main code with args and returns its exit
// status, stdout and stderr.
func runCtl(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// slotHolders keeps every slot of a control socket held: raw clients that
// connect and send nothing, so that the server waits for their command.
type slotHolders struct {
	t     *testing.T
	path  string
	conns []net.Conn
}

// close closes the holders and waits until the server serves again.
func (h *slotHolders) close() {
	h.t.Helper()
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.conns = nil
	deadline := time.Now().Add(30 * time.Second) // a safety net
	for {
		busy, err := probe(h.path)
		if err != nil {
			h.t.Fatal(err)
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatal("the control socket is still busy 30s after its holders left")
		}
	}
}

// controlSlots is how many connections a control socket serves at once
// (CONTROL.md).
const controlSlots = 8

// fill connects silent clients until controlSlots of them hold a slot. A
// client the server refused (busy) has the answer to read; one that holds
// a slot has nothing, and once a later probe is answered busy, every
// client before it has been accepted (the server accepts in order).
func (h *slotHolders) fill() {
	h.t.Helper()
	for range 1000 {
		if len(h.conns) < controlSlots {
			c, err := net.Dial("unix", h.path)
			if err != nil {
				h.t.Fatal(err)
			}
			h.conns = append(h.conns, c)
			continue
		}
		busy, err := probe(h.path)
		if err != nil {
			h.t.Fatal(err)
		}
		if h.allHeld() && busy {
			return
		}
	}
	h.t.Fatal("1000 tries, and the silent clients do not hold every slot of the control socket")
}

// allHeld drops the clients the server has answered (refused as busy, or
// timed out waiting for their command) and reports whether none was.
func (h *slotHolders) allHeld() bool {
	h.t.Helper()
	kept := h.conns[:0]
	for _, c := range h.conns {
		if answered(h.t, c) {
			_ = c.Close()
			continue
		}
		kept = append(kept, c)
	}
	all := len(kept) == len(h.conns)
	h.conns = kept
	return all
}

// answered reports whether the server has written to c or closed it.
func answered(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var pollErr error
	err = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for n, pollErr = unix.Poll(fds, 0); pollErr == unix.EINTR; n, pollErr = unix.Poll(fds, 0) {
		}
	})
	if err == nil {
		err = pollErr
	}
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// probe asks for the status and reports whether the server said busy.
func probe(path string) (bool, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a safety net: the server answers at once
	_, _ = c.Write([]byte("HANDOFF-CONTROL 1 status\n"))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		return false, err
	}
	return strings.Contains(line, `"busy: `), nil
}

// awaitHangup waits until the server has closed its end of c.
func awaitHangup(t *testing.T, c net.Conn) {
	t.Helper()
	rc, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var pollErr error
	var revents int16
	err = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		deadline := time.Now().Add(30 * time.Second) // a safety net
		for time.Now().Before(deadline) {
			_, pollErr = unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
			if pollErr == unix.EINTR {
				continue
			}
			if revents = fds[0].Revents; pollErr != nil || revents&unix.POLLHUP != 0 {
				return
			}
			// Readable, not closed yet: the answer came before the close.
			fds[0].Events = unix.POLLRDHUP
		}
	})
	if err == nil {
		err = pollErr
	}
	if err != nil {
		t.Fatal(err)
	}
	if revents&unix.POLLHUP == 0 {
		t.Fatalf("the server did not close the refused connection in 30s (revents %#x)", revents)
	}
}

// TestBusyAfterClose: a busy server answers and closes at once, and
// handoffctl's request may be written only after that close (the write
// fails with EPIPE). The answer is still there: refused, busy.
func TestBusyAfterClose(t *testing.T) {
	path := controlServer(t)
	h := &slotHolders{t: t, path: path}
	defer h.close()
	h.fill()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	awaitHangup(t, c)
	var got []answer
	err = exchange(c, "HANDOFF-CONTROL 1 status", func(a answer) error { got = append(got, a); return nil })
	if err != nil {
		t.Fatalf("request to a busy server after its close: %v, want its busy answer", err)
	}
	if len(got) != 1 || got[0].Type != "error" || !strings.HasPrefix(got[0].Error.Error, "busy: ") {
		t.Fatalf("answers %+v, want one busy error", got)
	}
}

// TestBusyExitStatus runs handoffctl status against a control socket whose
// every slot is held by other clients: it must say refused, busy (exit 4),
// whether its request went out before the server's close or after.
func TestBusyExitStatus(t *testing.T) {
	path := controlServer(t)
	h := &slotHolders{t: t, path: path}
	defer h.close()
	const runs = 20
	for done, tries := 0, 0; done < runs; tries++ {
		if tries == 10*runs {
			t.Fatalf("only %d of %d runs met a control socket busy from start to end", done, runs)
		}
		h.fill()
		code, _, stderr := runCtl("status", "-socket", path)
		// The holders time out after 5 s: only a run while all of
		// them held their slot was surely refused for being busy.
		if !h.allHeld() {
			continue
		}
		done++
		if code != exitRefused || !strings.Contains(stderr, "handoffctl: refused: busy: ") {
			t.Fatalf("run %d: exit %d, stderr %q; want 4 and \"refused: busy\"", done, code, stderr)
		}
	}
}

// fakeServer serves a Unix socket that answers every line with answer and
// closes, and returns its path.
func fakeServer(t *testing.T, answer string) string {
	t.Helper()
	return fakeSequence(t, answer)
}

// fakeSequence is fakeServer answering its first connection with the first
// answer, the next with the next, and every one past the last with the last.
func fakeSequence(t *testing.T, answers ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "other.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = bufio.NewReader(c).ReadString('\n')
			_, _ = c.Write([]byte(answers[min(n, len(answers)-1)]))
			_ = c.Close()
		}
	}()
	return path
}

// TestNotAControlSocket: a Unix socket whose server speaks another
// protocol is as unreachable as none (exit 3), never "rolled back".
func TestNotAControlSocket(t *testing.T) {
	for _, tc := range []struct{ name, answer string }{
		{"text", "220 smtp.example ESMTP ready\r\n"},
		{"JSON of another protocol", `{"jsonrpc":"2.0","error":{"code":-32700}}` + "\n"},
		{"nothing", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := fakeServer(t, tc.answer)
			for _, cmd := range []string{"status", "upgrade"} {
				code, stdout, stderr := runCtl(cmd, "-socket", path)
				if code != exitUnreachable || !strings.HasPrefix(stderr, "handoffctl: "+path+": server unreachable: ") {
					t.Errorf("%s: exit %d, stderr %q, want 3 and unreachable", cmd, code, stderr)
				}
				if stdout != "" || strings.Contains(stderr, "rolled back") {
					t.Errorf("%s: stdout %q, stderr %q", cmd, stdout, stderr)
				}
			}
		})
	}
}

// TestSilentSocket: a Unix socket whose server waits for more than a line
// (an HTTP server, say) is unreachable once the first answer's wait ends,
// rather than a hang.
func TestSilentSocket(t *testing.T) {
	path := silentServer(t)
	defer func(d time.Duration) { firstAnswerWait = d }(firstAnswerWait)
	firstAnswerWait = 100 * time.Millisecond
	code, _, stderr := runCtl("status", "-socket", path)
	if code != exitUnreachable || !strings.Contains(stderr, "server unreachable: no answer in 100ms: is it a handoff control socket?") {
		t.Errorf("exit %d, stderr %q, want 3 and no answer", code, stderr)
	}
}

// silentServer serves a Unix socket that accepts and never answers, and
// returns its path.
func silentServer(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // open until the listener closes
		}
	}()
	return path
}

// TestUsageErrors: a usage error is one line with the handoffctl: prefix
// and a pointer to -h, not the whole help, and exits 2; -h prints the help
// and exits 0.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"-x"},
		{"inspect"},
		{"inspect", "a", "b"},
		{"inspect", "-x", "a"},
		{"status"},
		{"status", "-socket", "/a", "-pidfile", "/b"},
		{"status", "-socket", "/a", "extra"},
		{"status", "-socket"},
		{"status", "-binary", "/bin/true", "-socket", "/a"},
		{"upgrade", "-socket", "/a", "-timeout", "-1s"},
		{"upgrade", "-socket", "/a", "-timeout", "soon"},
	} {
		code, stdout, stderr := runCtl(args...)
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if code != exitUsage || stdout != "" || len(lines) != 2 || !strings.HasPrefix(lines[0], "handoffctl: ") ||
			!strings.Contains(lines[1], "handoffctl -h") {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant 2, and a handoffctl: line and a pointer to -h", args, code, stdout, stderr)
		}
	}
	for _, args := range [][]string{{"-h"}, {"inspect", "-h"}, {"status", "-help"}, {"upgrade", "-h"}} {
		code, _, stderr := runCtl(args...)
		if code != exitOK || !strings.HasPrefix(stderr, "usage: handoffctl") || !strings.Contains(stderr, "Exit status:") {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant 0 and the help", args, code, stderr)
		}
	}
}

// TestStatusNoRollbacks: the status of a server that never rolled back
// says 0 rollbacks rather than nothing.
func TestStatusNoRollbacks(t *testing.T) {
	path := controlServer(t)
	code, stdout, stderr := runCtl("status", "-socket", path)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, "\nrolled back:  0\n") {
		t.Errorf("status says:\n%s\nwant the line \"rolled back:  0\"", stdout)
	}
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		if k, v, _ := strings.Cut(line, ":"); strings.TrimSpace(v) == "" {
			t.Errorf("status line %q has no value", k)
		}
	}
}

// TestRolledBackReason: the reason of a rollback is never printed blank,
// in upgrade's answer or in a status.
func TestRolledBackReason(t *testing.T) {
	path := fakeServer(t, `{"type":"result","committed":false,"cause":"other","from":1}`+"\n")
	code, _, stderr := runCtl("upgrade", "-socket", path)
	if code != exitFailure || stderr != "handoffctl: upgrade rolled back (other): the server gave no reason\n" {
		t.Errorf("upgrade: exit %d, stderr %q", code, stderr)
	}
	var b bytes.Buffer
	printStatus(&b, controlwire.Status{Type: "status", Last: &controlwire.Result{Cause: "other"}})
	if !strings.Contains(b.String(), "rolled back (other): the server gave no reason") {
		t.Errorf("status with a rollback without a reason:\n%s", &b)
	}
}

// TestStatusLastUpgrade: status prints the last upgrade's mode, pids,
// connections and each phase's time.
func TestStatusLastUpgrade(t *testing.T) {
	var a controlwire.Status
	line := `{"type":"status","pid":20,"totals":{"committed":3,"rolled_back":{"exited":1},"conns_handed_over":1000},` +
		`"last":{"type":"result","committed":true,"mode":"rolling","from":10,"to":20,"took_ns":9000000,"conns":1000,` +
		`"state_bytes":5,"phases_ns":{"connected":1000000,"commit":2000,"move":7000000,"pause":0,"future":3000}}}`
	if err := json.Unmarshal([]byte(line), &a); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printStatus(&b, a)
	for _, want := range []string{
		"committed:    3 (1000 connections handed over)\n",
		"rolled back:  exited=1\n",
		"last upgrade: committed, rolling, pid 10 -> 20 in 9ms, 1000 connections, 5 state bytes\n",
		"phases:       connected 1ms, commit 2µs, move 7ms, pause 0s, future 3µs\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, &b)
		}
	}
}
