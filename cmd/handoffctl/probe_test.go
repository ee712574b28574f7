package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestProbe: ready passes in every phase but stopped (a container taking
// over or idle after a handover keeps its pod in its Service), live in
// every phase but stopped, and in one this handoffctl does not know; a
// server too busy to say its phase is live but not known ready; a server
// that does not answer fails both.
func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		answer      string
		ready, live bool
	}{
		{status("starting"), true, true},
		{status("serving"), true, true},
		{status("upgrading"), true, true},
		{status("handed-over"), true, true},
		{status("stopped"), false, false},
		{status("future-phase"), false, true},
		{`{"type":"error","error":"busy: 8 control connections already"}` + "\n", false, true},
		{"220 smtp.example ESMTP ready\r\n", false, false},
	} {
		path := fakeServer(t, tc.answer)
		for kind, want := range map[string]bool{"ready": tc.ready, "live": tc.live} {
			code, stdout, stderr := runCtl("probe", kind, "-socket", path)
			if (code == exitOK) != want {
				t.Errorf("probe %s of %q: exit %d (stdout %q, stderr %q), want it to pass: %t", kind, tc.answer, code, stdout, stderr, want)
			}
			out := stdout
			if code != exitOK {
				out = stderr
			}
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, kind) {
				t.Errorf("probe %s of %q: said %q, want one line naming the probe", kind, tc.answer, out)
			}
		}
	}
	gone := filepath.Join(t.TempDir(), "none.sock")
	if code, _, stderr := runCtl("probe", "live", "-socket", gone); code != exitUnreachable || !strings.HasPrefix(stderr, "handoffctl: not live: ") {
		t.Errorf("probe live of no server: exit %d, stderr %q, want 3 and why", code, stderr)
	}
}

// TestProbeServer: a real first process (never made ready: starting)
// passes both probes.
func TestProbeServer(t *testing.T) {
	path := controlServer(t)
	for _, kind := range []string{"ready", "live"} {
		code, stdout, stderr := runCtl("probe", kind, "-socket", path)
		if code != exitOK || !strings.HasSuffix(stdout, " is starting\n") {
			t.Errorf("probe %s: exit %d, stdout %q, stderr %q, want 0 and starting", kind, code, stdout, stderr)
		}
	}
}

// TestProbeUsage: probe wants ready or live, and one socket.
func TestProbeUsage(t *testing.T) {
	for _, args := range [][]string{
		{"probe"},
		{"probe", "-socket", "/a"},
		{"probe", "alive", "-socket", "/a"},
		{"probe", "ready"},
		{"probe", "ready", "-socket", "/a", "-pidfile", "/b"},
		{"probe", "live", "-socket", "/a", "extra"},
	} {
		if code, _, stderr := runCtl(args...); code != exitUsage || !strings.Contains(stderr, "handoffctl -h") {
			t.Errorf("%q: exit %d, stderr %q, want a usage error", args, code, stderr)
		}
	}
}

func status(phase string) string {
	return fmt.Sprintf(`{"type":"status","pid":7,"phase":%q}`+"\n", phase)
}
