package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fastPoll makes wait ask again at once, for the test.
func fastPoll(t *testing.T) {
	t.Helper()
	old := waitPoll
	waitPoll = time.Millisecond
	t.Cleanup(func() { waitPoll = old })
}

// TestWait: wait serving asks again until the server serves, or has
// handed over (it never will serve: the SidecarSet's empty image gets the
// same postStart hook); a socket that does not answer yet or is busy is
// asked again; a stopped server fails at once, well before the timeout;
// one that stays starting fails at the timeout, saying so. Timeouts leave
// a loaded machine time for the first answer, which the verdict needs.
func TestWait(t *testing.T) {
	fastPoll(t)
	busy := `{"type":"error","error":"busy: 8 control connections already"}` + "\n"
	for _, tc := range []struct {
		name    string
		answers []string
		timeout string
		code    int
		out     string // stdout if code is 0, else stderr
	}{
		{"serving", []string{status("serving")}, "1m", exitOK, "serving: pid 7 is serving\n"},
		{"handed-over", []string{status("handed-over")}, "1m", exitOK, "serving: pid 7 is handed-over\n"},
		{"starting, then serving", []string{status("starting"), status("starting"), status("serving")}, "1m",
			exitOK, "serving: pid 7 is serving\n"},
		{"no answer, busy, then serving", []string{"", busy, status("serving")}, "1m", exitOK, "serving: pid 7 is serving\n"},
		{"starting, then stopped", []string{status("starting"), status("stopped")}, "1m",
			exitFailure, "handoffctl: not serving: pid 7 stopped\n"},
		{"starting for ever", []string{status("starting")}, "2s",
			exitFailure, "handoffctl: not serving within 2s: pid 7 is starting\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := fakeSequence(t, tc.answers...)
			code, stdout, stderr := runCtl("wait", "serving", "-socket", path, "-timeout", tc.timeout)
			out := stdout
			if code != exitOK {
				out = stderr
			}
			if code != tc.code || out != tc.out {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, stdout, stderr, tc.code, tc.out)
			}
		})
	}
}

// TestWaitUnreachable: a socket that is not there, or that accepts and
// says nothing, is asked until the timeout, which bounds a silent one too
// (the first answer's own wait is made far longer here), and exits 3.
func TestWaitUnreachable(t *testing.T) {
	fastPoll(t)
	defer func(d time.Duration) { firstAnswerWait = d }(firstAnswerWait)
	firstAnswerWait = time.Hour
	for _, tc := range []struct{ path, why string }{
		{filepath.Join(t.TempDir(), "none.sock"), "no such file or directory"},
		{silentServer(t), "no answer within "},
	} {
		code, stdout, stderr := runCtl("wait", "serving", "-socket", tc.path, "-timeout", "300ms")
		if code != exitUnreachable || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.why) ||
			!strings.HasPrefix(stderr, "handoffctl: not serving within 300ms: "+tc.path+": server unreachable: ") {
			t.Errorf("exit %d, stdout %q, stderr %q; want 3 and one line why: %s", code, stdout, stderr, tc.why)
		}
	}
}

// TestWaitThenUnanswered: a status once answered stays what wait says at
// its timeout when later asks failed. Whether the last failure is added
// depends on the last ask: one the timeout cut short is the timeout
// itself (so it is under load), one the server closed unanswered is
// added; TestWaitTimedOut holds each case to its exact line.
func TestWaitThenUnanswered(t *testing.T) {
	fastPoll(t)
	path := fakeSequence(t, status("starting"), "")
	code, stdout, stderr := runCtl("wait", "serving", "-socket", path, "-timeout", "2s")
	head := "handoffctl: not serving within 2s: pid 7 is starting"
	if code != exitFailure || stdout != "" ||
		(stderr != head+"\n" && stderr != head+" (then: "+path+": server unreachable: no answer)\n") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1 and %q, with or without what followed", code, stdout, stderr, head)
	}
}

// TestWaitTimedOut: what wait says at its timeout, from what it saw last.
func TestWaitTimedOut(t *testing.T) {
	starting := seenStatus{"starting", 7}
	closed := fmt.Errorf("/s: %w: no answer", errUnreachable)
	cut := fmt.Errorf("/s: %w: %w within 1ms", errUnreachable, errNoAnswerInTime)
	for _, tc := range []struct {
		name string
		seen seenStatus
		err  error
		code int
		line string
	}{
		{"a status", starting, nil, exitFailure, "pid 7 is starting"},
		{"a status, then closed unanswered", starting, closed, exitFailure, "pid 7 is starting (then: /s: server unreachable: no answer)"},
		{"a status, then cut short", starting, cut, exitFailure, "pid 7 is starting"},
		{"never reached", seenStatus{}, closed, exitUnreachable, "/s: server unreachable: no answer"},
		{"never answered in time", seenStatus{}, cut, exitUnreachable, "/s: server unreachable: no answer within 1ms"},
		{"no status", seenStatus{}, errors.New("/s: no status (busy)"), exitFailure, "/s: no status (busy)"},
	} {
		var b strings.Builder
		code := waitTimedOut(&b, 2*time.Second, tc.seen, tc.err)
		if want := "handoffctl: not serving within 2s: " + tc.line + "\n"; code != tc.code || b.String() != want {
			t.Errorf("%s: exit %d, %q; want %d, %q", tc.name, code, b.String(), tc.code, want)
		}
	}
}

// TestWaitServer: a real first process that is never made ready stays
// starting, and wait says so at its timeout, whether or not its last ask
// was answered in what was left of it (a CI run said "unreachable" of it
// when that ask was not). The timeout leaves a loaded machine's control
// server time for its first answer.
func TestWaitServer(t *testing.T) {
	fastPoll(t)
	path := controlServer(t)
	code, _, stderr := runCtl("wait", "serving", "-socket", path, "-timeout", "2s")
	said := regexp.MustCompile(`^handoffctl: not serving within 2s: pid [0-9]+ is starting\n$`)
	if code != exitFailure || !said.MatchString(stderr) {
		t.Errorf("exit %d, stderr %q, want 1 and starting", code, stderr)
	}
}

// TestWaitUsage: wait wants serving, one socket and a positive timeout.
func TestWaitUsage(t *testing.T) {
	for _, args := range [][]string{
		{"wait"},
		{"wait", "-socket", "/a"},
		{"wait", "ready", "-socket", "/a"},
		{"wait", "serving"},
		{"wait", "serving", "-socket", "/a", "-pidfile", "/b"},
		{"wait", "serving", "-socket", "/a", "-timeout", "0s"},
		{"wait", "serving", "-socket", "/a", "-timeout", "soon"},
		{"wait", "serving", "-socket", "/a", "extra"},
	} {
		if code, _, stderr := runCtl(args...); code != exitUsage || !strings.Contains(stderr, "handoffctl -h") {
			t.Errorf("%q: exit %d, stderr %q, want a usage error", args, code, stderr)
		}
	}
}

// TestAskCutShortByDial: an ask whose own bound runs out while it is
// still dialling (what is left of wait's timeout on a loaded machine) is
// cut short by that bound, as one left unanswered is, not a separate
// failure (a make test run said "is starting (then: … dial unix …: i/o
// timeout)" of a server that had answered). A dial that fails for
// another reason stays what it is.
func TestAskCutShortByDial(t *testing.T) {
	path := silentServer(t)
	_, _, err := askStatus(path, time.Nanosecond)
	if !errors.Is(err, errUnreachable) || !errors.Is(err, errNoAnswerInTime) {
		t.Errorf("dial cut short by the ask's bound: %v, want unreachable and no answer in time", err)
	}
	_, _, err = askStatus(filepath.Join(t.TempDir(), "none.sock"), time.Second)
	if !errors.Is(err, errUnreachable) || errors.Is(err, errNoAnswerInTime) {
		t.Errorf("no socket: %v, want unreachable, not a timeout", err)
	}
}
