package harness

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/bench/internal/load"
	"github.com/handoff-dev/handoff/bench/internal/result"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestMain lets the test binary play the client processes, as
// upgradebench does for the real runs.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "client" {
		os.Exit(ClientMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestRunModes runs each upgrade mode for real, small: the pdf server,
// two client processes, one SIGHUP (none in the run without upgrades).
// Each mode must show what it is known to do to its clients, and the
// harness must have measured it.
func TestRunModes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the pdf server under load in five modes, ~30 s")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	server := filepath.Join(t.TempDir(), "pdf")
	if err := proc.Build("github.com/handoff-dev/handoff/examples/pdf/cmd/pdf-v2", server); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{result.ModeFull, result.ModeFullNoPrecopy, result.ModeRolling, result.ModeListeners,
		result.ModeRestart, result.ModeNone} {
		t.Run(mode, func(t *testing.T) {
			// 5 s, the SIGHUP at 2.5 s: a listeners upgrade's 2 s drain
			// ends inside the run, so its clients see the close.
			// 20,000 accounts of state besides the clients' own, checked
			// as they are topped up (seed.go).
			cfg := Config{Self: self, Server: server, Mode: mode, Conns: 40, Rate: 400, Churn: 20,
				Duration: 5 * time.Second, Upgrades: 1, Accounts: 20000, Dir: t.TempDir()}
			r, err := Run(cfg, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			checkCommon(t, cfg, r)
			switch mode {
			case result.ModeFull:
				checkFull(t, r)
				if r.Upgrades[0].Phases["precopy"] <= 0 {
					t.Errorf("full: no pre-copy of the ledger: %v", r.Upgrades[0].Phases)
				}
			case result.ModeFullNoPrecopy:
				checkFull(t, r)
				if p, ok := r.Upgrades[0].Phases["precopy"]; ok {
					t.Errorf("full with -precopy=false: a pre-copy of %v", p)
				}
			case result.ModeRolling:
				checkRolling(t, r)
			case result.ModeNone:
				checkKept(t, r)
			case result.ModeListeners:
				// Every conn is closed after the drain; the state its old
				// process changed since the snapshot is gone.
				if r.ConnsDropped != cfg.Conns || r.Failed == 0 {
					t.Errorf("listeners: %d of %d conns dropped, %d failed: want all dropped and some failed",
						r.ConnsDropped, cfg.Conns, r.Failed)
				}
			case result.ModeRestart:
				// Every conn is closed; the snapshot at stop is exact.
				if r.ConnsDropped != cfg.Conns || r.Failed != 0 {
					t.Errorf("restart: %d of %d conns dropped, %d failed: want all dropped, none failed",
						r.ConnsDropped, cfg.Conns, r.Failed)
				}
			}
		})
	}
}

func checkCommon(t *testing.T, cfg Config, r result.Run) {
	t.Helper()
	want := uint64(cfg.Rate * cfg.Duration.Seconds())
	if r.Requests < want*9/10 || r.Requests > want*11/10 {
		t.Errorf("%d requests recorded, want about %d", r.Requests, want)
	}
	if r.Duplicated != 0 {
		t.Errorf("%d duplicated replies", r.Duplicated)
	}
	if r.OutWindow.Count == 0 || len(r.Timeline) == 0 || r.MaxStall <= 0 {
		t.Errorf("latency outside windows %+v, %d timeline points, longest stall %v: want all measured",
			r.OutWindow, len(r.Timeline), r.MaxStall)
	}
	if cfg.Mode == result.ModeNone {
		if len(r.Upgrades) != 0 || r.InWindow.Count != 0 {
			t.Errorf("without upgrades: upgrades %+v, %d replies in a window; want none", r.Upgrades, r.InWindow.Count)
		}
	} else if len(r.Upgrades) != 1 || !r.Upgrades[0].OK || r.Upgrades[0].Duration <= 0 || r.InWindow.Count == 0 {
		t.Errorf("upgrades %+v, %d replies in the window: want one that ended, replies in it",
			r.Upgrades, r.InWindow.Count)
	}
	if r.RSSBefore <= 0 || r.FdsBefore < cfg.Conns || r.ServerCPUPerReq <= 0 {
		t.Errorf("server before: RSS %d, %d fds, CPU/req %v: want measured, >= %d fds",
			r.RSSBefore, r.FdsBefore, r.ServerCPUPerReq, cfg.Conns)
	}
}

// checkKept wants every connection kept and every request answered right.
func checkKept(t *testing.T, r result.Run) {
	t.Helper()
	if r.ConnsSurvived != r.Conns || r.Lost+r.Failed+r.Refused+r.Reset != 0 {
		t.Errorf("%s: %d of %d survived, %d lost, %d failed, %d refused, %d reset: want all and none",
			r.Mode, r.ConnsSurvived, r.Conns, r.Lost, r.Failed, r.Refused, r.Reset)
	}
}

// checkRolling wants every connection kept and every balance exact (each
// connection carries what it changed after the snapshot), and the move
// timed, with no pause for all.
func checkRolling(t *testing.T, r result.Run) {
	t.Helper()
	checkKept(t, r)
	ph := r.Upgrades[0].Phases
	if ph["move"] <= 0 || ph["max_wait"] <= 0 || r.Pause != 0 {
		t.Errorf("rolling: phases %v, pause %v: want move and max_wait measured, no pause", ph, r.Pause)
	}
}

func checkFull(t *testing.T, r result.Run) {
	t.Helper()
	checkKept(t, r)
	ph := r.Upgrades[0].Phases
	for _, name := range []string{"connected", "fds", "park", "parked", "state", "ready", "commit", "resume"} {
		if ph[name] <= 0 {
			t.Errorf("full: phase %s not measured: %v", name, ph)
		}
	}
	if r.Pause != parkedAll(ph).Pause() || r.Pause <= 0 {
		t.Errorf("full: pause %v, want the sum of park..commit, %v", r.Pause, parkedAll(ph).Pause())
	}
	if first := parkedAll(ph).Pause() + ph["resume"]; r.PauseResumed < first {
		t.Errorf("full: pause + resume %v, want at least the first upgrade's %v", r.PauseResumed, first)
	}
}

// TestPhasesFromLog reads the phases from the handoff's own log line.
func TestPhasesFromLog(t *testing.T) {
	log := `time=2026-11-23T12:04:00.465Z level=INFO msg="handoff: handed over" pid=32110 to=32126 conns=1000 ` +
		`early=1000 connected=25.5ms fds=94.1ms precopy=50.2ms park=8.5ms parked=7.8ms state=1.2ms ready=3.4ms commit=1ms pause=21.9ms release=16.2ms`
	m := lastMatch("noise\n"+log+"\n", handedOver)
	if m == nil {
		t.Fatal("no match")
	}
	got := map[string]time.Duration{}
	for _, kv := range phase.FindAllStringSubmatch(m[1], -1) {
		got[kv[1]], _ = time.ParseDuration(kv[2])
	}
	want := map[string]time.Duration{"connected": 25500 * time.Microsecond, "fds": 94100 * time.Microsecond,
		"precopy": 50200 * time.Microsecond, "park": 8500 * time.Microsecond, "parked": 7800 * time.Microsecond, "state": 1200 * time.Microsecond,
		"ready": 3400 * time.Microsecond, "commit": time.Millisecond}
	if len(got) != len(want) {
		t.Fatalf("phases %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if p := parkedAll(got).Pause(); p != 21900*time.Microsecond {
		t.Errorf("pause %v, want 21.9ms (the logged one)", p)
	}
}

// TestRollingPhasesFromLog reads a rolling move's end, as the old process
// logs it.
func TestRollingPhasesFromLog(t *testing.T) {
	log := `time=2026-12-01T02:32:34.844Z level=INFO msg="handoff: rolling move done" pid=18363 to=18388 ` +
		`moved=300 early=300 stayed=0 closed=0 move=9.23914ms max_wait=921.271µs`
	// The new process's line comes after the old one's.
	newer := `time=2026-12-01T02:32:34.845Z level=INFO msg="handoff: rolling move done" pid=18388 from=18363 ` +
		`moved=300 move=9.339839ms stayed_with_old=0 closed=0`
	m := lastMatch(log+"\n"+newer+"\n", handedOver)
	if m == nil {
		t.Fatal("no match")
	}
	got := map[string]time.Duration{}
	for _, kv := range phase.FindAllStringSubmatch(m[1], -1) {
		got[kv[1]], _ = time.ParseDuration(kv[2])
	}
	want := map[string]time.Duration{"move": 9239140 * time.Nanosecond, "max_wait": 921271 * time.Nanosecond}
	if !maps.Equal(got, want) {
		t.Fatalf("phases %v, want %v", got, want)
	}
}

// TestSummarise checks the figures made from records: windows, outcomes,
// the longest stall.
func TestSummarise(t *testing.T) {
	ms := int64(time.Millisecond)
	r := result.Run{Conns: 2, ConnsDropped: 1,
		Upgrades: []result.Upgrade{{At: 1000 * time.Millisecond, Duration: 50 * time.Millisecond, OK: true}}}
	recs := []load.Record{
		{Due: 100 * ms, Sent: 100 * ms, Replied: 101 * ms, Outcome: load.OK},
		{Due: 1010 * ms, Sent: 1010 * ms, Replied: 1070 * ms, Outcome: load.OK},     // in the window: 60 ms
		{Due: 1020 * ms, Sent: 1020 * ms, Outcome: load.Lost},                       // no latency
		{Due: 1100 * ms, Sent: 1100 * ms, Replied: 1102 * ms, Outcome: load.Failed}, // window + 100 ms drain
		{Due: 2000 * ms, Sent: 2000 * ms, Replied: 2003 * ms, Outcome: load.OK},
	}
	summarise(&r, recs)
	if r.Requests != 5 || r.Lost != 1 || r.Failed != 1 || r.ConnsSurvived != 1 {
		t.Errorf("requests %d lost %d failed %d survived %d: want 5 1 1 1", r.Requests, r.Lost, r.Failed, r.ConnsSurvived)
	}
	if r.InWindow.Count != 2 || r.InWindow.Max != 60*time.Millisecond || r.OutWindow.Count != 2 || r.OutWindow.Max != 3*time.Millisecond {
		t.Errorf("in window %+v, outside %+v", r.InWindow, r.OutWindow)
	}
	if r.MaxStall != 60*time.Millisecond {
		t.Errorf("longest stall %v, want 60ms", r.MaxStall)
	}
	// 100 ms buckets of the replies' due times; the lost request has none.
	var at []time.Duration
	for _, p := range r.Timeline {
		at = append(at, p.At)
	}
	if want := []time.Duration{100 * time.Millisecond, 1000 * time.Millisecond, 1100 * time.Millisecond, 2000 * time.Millisecond}; !slices.Equal(at, want) || r.Timeline[1].Worst != 60*time.Millisecond {
		t.Errorf("timeline %+v: want buckets %v, the second's worst 60ms", r.Timeline, want)
	}
}
