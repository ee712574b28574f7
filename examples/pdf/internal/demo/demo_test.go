package demo_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/examples/pdf/internal/demo"
	"github.com/handoff-dev/handoff/internal/proc"
)

// buildServers builds pdf-v1, pdf-v2 and handoffctl into a fresh directory.
func buildServers(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, pkg := range map[string]string{
		"pdf-v1":     "github.com/handoff-dev/handoff/examples/pdf/cmd/pdf-v1",
		"pdf-v2":     "github.com/handoff-dev/handoff/examples/pdf/cmd/pdf-v2",
		"handoffctl": "github.com/handoff-dev/handoff/cmd/handoffctl",
	} {
		if err := proc.Build(pkg, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestLiveUpgrade is the acceptance test: real server processes upgraded
// by SIGHUP and by handoffctl under real load, and not one connection, request or balance
// lost on the way.
func TestLiveUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the servers and runs them under load for about a minute")
	}
	bin := buildServers(t)
	dir := t.TempDir()
	var out bytes.Buffer
	// 4000/s rather than less: Settle grows as the per-connection rate
	// falls, since each connection must ask every server VERSION.
	res, err := demo.Run(context.Background(), demo.Config{
		BinDir: bin, Dir: dir, Conns: 200, Rate: 4000, Churn: 50,
	}, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !res.OK() {
		logServer(t, dir)
		t.Error("the demo failed; see the summary above")
	}
	checkLoad(t, res)
	checkSteps(t, res)
	if !res.StatsCarried() {
		t.Errorf("STATS under v2 did not count the charges made under v1 (%d of %d wrong)", res.StatsWrong, res.StatsChecks)
	}
	if !strings.HasPrefix(res.FinalVersion, "v1.") {
		t.Errorf("VERSION after the last step = %q, want v1", res.FinalVersion)
	}
}

func checkLoad(t *testing.T, res demo.Result) {
	t.Helper()
	ld := res.Load
	for _, f := range []struct {
		name      string
		got, want uint64
	}{
		{"persistent connections", ld.Conns, 200},
		{"passed the final check", ld.FinalOK, 200},
		{"dropped", ld.DroppedConns, 0},
		{"stalled", ld.Stalled, 0},
		{"refused", ld.RefusedDials, 0},
		{"mismatches", ld.Mismatches, 0},
		{"missing", ld.Missing, 0},
		{"unexpected", ld.Unexpected, 0},
	} {
		if f.got != f.want {
			t.Errorf("load: %s = %d, want %d", f.name, f.got, f.want)
		}
	}
	// v1, v2, v2 again, v1: every connection must have met all four.
	if ld.ConnPidsMin != 4 || ld.ConnPidsMax != 4 {
		t.Errorf("load: processes per connection %d..%d, want 4..4", ld.ConnPidsMin, ld.ConnPidsMax)
	}
	if ld.ChurnOK == 0 || ld.RepliesOK != ld.Sent {
		t.Errorf("load: churn ok %d, replies ok %d of %d sent", ld.ChurnOK, ld.RepliesOK, ld.Sent)
	}
}

func checkSteps(t *testing.T, res demo.Result) {
	t.Helper()
	want := []struct {
		from, to, via string
		fail          bool
	}{
		{"v1", "v2", "SIGHUP", false},
		{"v2", "v2", "handoffctl", false},
		{"v2", "broken", "handoffctl", true},
		{"v2", "v1", "SIGHUP", false},
	}
	if len(res.Steps) != len(want) {
		t.Fatalf("%d steps ran, want %d", len(res.Steps), len(want))
	}
	for i, s := range res.Steps {
		w := want[i]
		if s.From != w.from || s.To != w.to || s.Via != w.via || s.WantFail != w.fail || !s.OK() {
			t.Errorf("step %d: %s, want %s → %s via %s (fail %v)", i+1, s, w.from, w.to, w.via, w.fail)
		}
		if samePID := s.NewPID == s.OldPID; samePID != w.fail {
			t.Errorf("step %d: pid %d → %d", i+1, s.OldPID, s.NewPID)
		}
		if s.Via == "handoffctl" {
			checkCtlStep(t, i+1, s)
		}
	}
}

// checkCtlStep checks what handoffctl said and what /metrics showed
// around a handoffctl step.
func checkCtlStep(t *testing.T, n int, s demo.Step) {
	t.Helper()
	wantExit := 0
	if s.WantFail {
		wantExit = 1
	}
	if s.CtlExit != wantExit || len(s.CtlOutput) == 0 {
		t.Errorf("step %d: handoffctl exit %d with %d lines, want exit %d with output", n, s.CtlExit, len(s.CtlOutput), wantExit)
	}
	if !s.CountersContinued() {
		t.Errorf("step %d: %s", n, s.CountersLine())
	}
	b, a := s.Before, s.After
	if b.Requests == 0 || a.Requests < b.Requests {
		t.Errorf("step %d: pdf_requests_total %v → %v, want > 0 and not falling", n, b.Requests, a.Requests)
	}
	dc, dr := a.Committed-b.Committed, a.RolledBack-b.RolledBack
	if s.WantFail && (dc != 0 || dr != 1) || !s.WantFail && (dc != 1 || dr != 0) {
		t.Errorf("step %d: committed +%v, rolled_back +%v", n, dc, dr)
	}
}

// TestMissingHandoffctl: without handoffctl in BinDir the demo says so
// before starting anything.
func TestMissingHandoffctl(t *testing.T) {
	bin := t.TempDir()
	for _, v := range []string{"pdf-v1", "pdf-v2"} {
		if err := os.WriteFile(filepath.Join(bin, v), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	res, err := demo.Run(context.Background(), demo.Config{BinDir: bin, Dir: t.TempDir()}, &out)
	if err == nil || !strings.Contains(err.Error(), "handoffctl") || res.OK() {
		t.Errorf("Run without handoffctl: err %v, ok %v", err, res.OK())
	}
}

func logServer(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Logf("server.log: %v", err)
		return
	}
	t.Logf("server.log:\n%s", b)
}
