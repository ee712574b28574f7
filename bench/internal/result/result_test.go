package result

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

// testSuite is made-up data, not a measurement: every mode at 1k and 15k
// connections, where full and rolling mode meet every goal at 1k and miss
// each at 15k, so both verdicts show.
func testSuite() *Suite {
	s := &Suite{
		Started: time.Date(2025, 11, 23, 10, 0, 0, 0, time.UTC),
		Machine: Machine{CPU: "synthetic test CPU", Cores: 2, Kernel: "6.18", Go: "go1.26.8"},
		Command: "go run ./bench/cmd/upgradebench -rate 2000",
		Rate:    2000,
	}
	for _, conns := range []int{1000, 15000} {
		for _, mode := range []string{ModeNone, ModeRestart, ModeListeners, ModeRolling, ModeFull} {
			s.Runs = append(s.Runs, testRun(mode, conns))
		}
	}
	return s
}

func testRun(mode string, conns int) Run {
	r := Run{
		Mode: mode, Conns: conns, ConnsSurvived: conns, Requests: 20000,
		InWindow:  Latency{Count: 900, P50: 850 * time.Microsecond, P99: 12300 * time.Microsecond, P999: 30 * ms, Max: 45 * ms},
		OutWindow: Latency{Count: 19100, P50: 400 * time.Microsecond, P99: 2 * ms, P999: 3 * ms, Max: 5 * ms},
		MaxStall:  4 * ms,
		Upgrades: []Upgrade{
			{At: 3 * time.Second, Duration: 300 * ms, OK: true},
			{At: 7 * time.Second, Duration: 350 * ms, OK: true},
		},
		Timeline: testTimeline(map[string]time.Duration{ModeFull: 40 * ms, ModeRolling: 20 * ms,
			ModeListeners: 90 * ms, ModeRestart: 800 * ms, ModeNone: 3 * ms}[mode]),
	}
	switch {
	case mode == ModeNone:
		r.Upgrades, r.InWindow = nil, Latency{}
		r.MaxStall = map[int]time.Duration{1000: 3 * ms, 15000: 20 * ms}[conns]
	case mode == ModeRolling && conns == 15000:
		r.MaxStall, r.Duplicated = 50*ms, 2
	case mode == ModeFull && conns == 15000:
		r.ConnsSurvived, r.ConnsDropped, r.Lost = 14990, 10, 3
		r.MaxStall = 57300 * time.Microsecond
		r.Upgrades[1].Duration = 1200 * ms
		r.Pause, r.Floor = 42*ms, 10*ms
		r.RSSBefore, r.RSSAfter = 45_200_000, 47_800_000
		r.FdsBefore, r.FdsAfter = 15012, 15013
	case mode == ModeFull:
		r.Pause, r.Floor = 2*ms, 1*ms
	case mode == ModeRestart:
		r.ConnsSurvived, r.ConnsDropped, r.Refused = 0, conns, 17
	}
	if mode == ModeRolling {
		r.Upgrades[0].Phases = map[string]time.Duration{"move": 30 * ms, "max_wait": 2 * ms}
		r.Upgrades[1].Phases = map[string]time.Duration{"move": 50 * ms, "max_wait": 4 * ms}
	}
	if mode == ModeFull {
		r.Upgrades[0].Phases = map[string]time.Duration{"connected": 100 * ms, "park": 1 * ms, "fds": 2 * ms, "commit": 5 * ms}
		r.Upgrades[1].Phases = map[string]time.Duration{"connected": 120 * ms, "park": 3 * ms, "fds": 4 * ms, "commit": 7 * ms}
	}
	return r
}

// testTimeline is 10 s in 100 ms buckets, with a spike to spike at each
// upgrade and one empty bucket, which the chart must clamp to draw on a
// log axis.
func testTimeline(spike time.Duration) []Point {
	var pts []Point
	for i := range 100 {
		at := time.Duration(i) * 100 * ms
		worst := 2 * ms
		switch {
		case i == 30 || i == 70:
			worst = spike
		case i == 50:
			worst = 0
		}
		pts = append(pts, Point{At: at, Worst: worst, P99: worst / 2})
	}
	return pts
}

func markdown(t *testing.T, s *Suite) string {
	t.Helper()
	var b bytes.Buffer
	if err := s.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestMarkdown(t *testing.T) {
	md := markdown(t, testSuite())
	for _, want := range []string{
		"Machine: synthetic test CPU, 2 cores, Linux 6.18, go1.26.8; rate 2000 req/s; started 2025-11-23T10:00:00Z; command: `go run ./bench/cmd/upgradebench -rate 2000`",
		"| mode | conns | survived | lost | dup | failed | refused | reset | p50 in | p99 in | p99.9 in | max in | p99 out | longest stall | upgrades ok | SIGHUP→exit | pause | floor | pause/floor | RSS MB | fds |",
		"| full | 1000 | 1000/1000 (100%) | 0 | 0 | 0 | 0 | 0 | 850µs | 12.3ms | 30ms | 45ms | 2ms | 4ms | 2/2 | 350ms | 2ms | 1ms | 2.0x | — | — |",
		"| full | 15000 | 14990/15000 (99.9%) | 3 | 0 | 0 | 0 | 0 | 850µs | 12.3ms | 30ms | 45ms | 2ms | 57.3ms | 2/2 | 1.2s | 42ms | 10ms | 4.2x | 45.2→47.8 | 15012→15013 |",
		"| restart | 15000 | 0/15000 (0%) | 0 | 0 | 0 | 17 | 0 |",
		"| none | 1000 | 1000/1000 (100%) | 0 | 0 | 0 | 0 | 0 | — | — | — | — | 2ms | 3ms | — | — | — | — | — | — | — | — |",
		"`none` is the same load without any upgrade: it has no upgrade window, so no \"in\" figures, and its longest stall is over the whole run (as every mode's is).",
		"| 2/2 | 350ms | — | — | — | — | — |",
		"| mode | conns | upgrades | connected | fds | park | commit | move | max_wait |",
		"| full | 1000 | 2 | 110ms | 3ms | 2ms | 6ms | — | — |",
		"| rolling | 1000 | 2 | — | — | — | — | 40ms | 3ms |",
		"- (a) all connections survive, no request lost, duplicated or failed, none refused, at 1000 conns: met — 1000/1000 (100%) survived, 0 lost, 0 dup, 0 failed, 0 refused",
		"at 15000 conns: missed by 10 conns, 3 lost — 14990/15000 (99.9%) survived, 3 lost",
		"- (b) longest stall under 10ms at 1000 conns (goal stated for 1k): met — 4ms",
		"- (b) longest stall under 50ms at 15000 conns (goal stated for 10k): missed by 7.3ms — 57.3ms",
		"- (c) SIGHUP to old process exit under 1s at 15000 conns: missed by 200ms — longest of 2 upgrades 1.2s",
		"- (d) pause within 3x the floor at 1000 conns: met — pause 2ms, 2.0x floor 1ms",
		"- (d) pause within 3x the floor at 15000 conns: missed by 12ms — pause 42ms, 4.2x floor 10ms\n\nGoals, rolling mode:\n\n",
		"- (a) all connections survive, no request lost, duplicated or failed, none refused, at 15000 conns: missed by 2 dup — 15000/15000 (100%) survived, 0 lost, 2 dup, 0 failed, 0 refused",
		"- (e) longest stall within 2x that of the same load without upgrades (none) at 1000 conns (goal stated for 10k): met — rolling 4ms, none 3ms (over its whole run), 1.3x",
		"- (e) longest stall within 2x that of the same load without upgrades (none) at 15000 conns (goal stated for 10k): missed by 10ms — rolling 50ms, none 20ms (over its whole run), 2.5x",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks\n%s\nin\n%s", want, md)
		}
	}
	checkRowOrder(t, md)
	checkTableWidths(t, md)
}

// checkRowOrder wants rows grouped by scale, full first within a scale,
// though testSuite lists the modes the other way round.
func checkRowOrder(t *testing.T, md string) {
	var got []string
	for _, line := range strings.Split(md, "\n") {
		if f := strings.Split(line, " | "); len(f) > 20 {
			got = append(got, strings.TrimPrefix(f[0], "| ")+"/"+f[1])
		}
	}
	want := []string{"mode/conns",
		"full/1000", "rolling/1000", "listeners/1000", "restart/1000", "none/1000",
		"full/15000", "rolling/15000", "listeners/15000", "restart/15000", "none/15000"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}
}

// checkTableWidths wants every row of a table to have as many cells as
// its header, or markdown renderers drop or shift cells.
func checkTableWidths(t *testing.T, md string) {
	width := 0
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			width = 0
			continue
		}
		n := strings.Count(line, "|")
		if width == 0 {
			width = n
		} else if n != width {
			t.Errorf("row has %d bars, header %d: %s", n, width, line)
		}
	}
}

func TestMarkdownMissingModes(t *testing.T) {
	s := testSuite()
	s.Runs = s.Runs[1:2] // restart at 1000 only
	md := markdown(t, s)
	for _, absent := range []string{"full", "rolling", "listeners", "none", "Goals", "phases"} {
		if strings.Contains(md, absent) {
			t.Errorf("markdown mentions %q with only a restart run:\n%s", absent, md)
		}
	}
}

// Rolling mode without a run without upgrades at its scale is held to
// (a), and (e) says why it has no verdict; with no rolling run there is
// no rolling section.
func TestMarkdownRollingWithoutNone(t *testing.T) {
	s := testSuite()
	s.Runs = slices.DeleteFunc(s.Runs, func(r Run) bool { return r.Mode == ModeNone || r.Conns == 15000 })
	md := markdown(t, s)
	want := "Goals, rolling mode:\n\n" +
		"- (a) all connections survive, no request lost, duplicated or failed, none refused, at 1000 conns: met — 1000/1000 (100%) survived, 0 lost, 0 dup, 0 failed, 0 refused\n" +
		"- (e) longest stall within 2x that of the same load without upgrades (none) at 1000 conns (goal stated for 10k): not measured — rolling 4ms, no run without upgrades at this scale\n"
	if !strings.Contains(md, want+"\nCost goals") {
		t.Errorf("markdown does not end its goals with\n%s\nbut:\n%s", want, md)
	}
	if strings.Contains(md, "`none`") {
		t.Errorf("markdown explains none without a none run:\n%s", md)
	}
	s.Runs = slices.DeleteFunc(s.Runs, func(r Run) bool { return r.Mode == ModeRolling })
	if md := markdown(t, s); strings.Contains(md, "rolling") || !strings.Contains(md, "floor 1ms\n\nCost goals") {
		t.Errorf("without a rolling run:\n%s", md)
	}
}

func TestFmtDur(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0"},
		{999, "999ns"},
		{850 * time.Microsecond, "850µs"},
		{12345 * time.Microsecond, "12.3ms"},
		{1020 * ms, "1.02s"},
		{1500 * time.Microsecond, "1.5ms"},
		{999960 * time.Nanosecond, "1ms"},
		{90 * time.Second, "90s"},
		{-2 * ms, "-2ms"},
	} {
		if got := fmtDur(tc.d); got != tc.want {
			t.Errorf("fmtDur(%d) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	s := testSuite()
	path := filepath.Join(t.TempDir(), "suite.json")
	if err := s.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("read back\n%+v\nwrote\n%+v", got, s)
	}
	// A run without upgrades has neither upgrades nor an in-window
	// latency, rather than zeros that would read as measured.
	b, _ := os.ReadFile(path)
	if n, want := bytes.Count(b, []byte(`"in_window"`)), 8; n != want {
		t.Errorf("%d runs have in_window, want %d: every run but the 2 without upgrades", n, want)
	}
	if n, want := bytes.Count(b, []byte(`"upgrades"`)), 8; n != want {
		t.Errorf("%d runs list upgrades, want %d", n, want)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want only the result: %v", len(entries), entries)
	}
}

func TestReadJSONErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadJSON(filepath.Join(dir, "absent.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want a not-exist error", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJSON(bad); err == nil {
		t.Error("truncated JSON read without error")
	}
}

func TestChart(t *testing.T) {
	s := testSuite()
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		check func([]byte) bool
	}{
		{"c.png", func(b []byte) bool { return bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) }},
		{"c.svg", func(b []byte) bool { return bytes.Contains(b, []byte("<svg")) }},
	} {
		path := filepath.Join(dir, tc.name)
		if err := s.Chart(path, 15000); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !tc.check(b) {
			t.Errorf("%s: not the expected format, starts %q", tc.name, b[:min(len(b), 16)])
		}
	}
	if err := s.Chart(filepath.Join(dir, "none.svg"), 5000); err == nil {
		t.Error("chart of a scale with no run drew without error")
	}
}

func TestCharts(t *testing.T) {
	dir := t.TempDir()
	paths, err := testSuite().Charts(dir, "latency")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "latency-1000.svg"), filepath.Join(dir, "latency-15000.svg")}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("paths %v, want %v", paths, want)
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v, size %v", p, err, fi)
		}
	}
}

// TestCostGoals: each cost goal is a ratio within the run, met or missed
// at its factor, and says what it compared; one whose figures are
// missing says so.
func TestCostGoals(t *testing.T) {
	s := &Suite{Runs: []Run{
		{Mode: ModeNone, Conns: 10000, MaxStall: 20 * ms},
		{Mode: ModeFull, Conns: 10000, MaxStall: 61 * ms, PauseResumed: 40 * ms, PauseFloor: 20 * ms, Floor: 300 * ms,
			RSSBefore: 100e6, RSSAfter: 121e6, Upgrades: []Upgrade{
				{Duration: 450 * ms, OK: true, RSSOld: 100e6, RSSNew: 99e6},
				{Duration: 440 * ms, OK: true, RSSOld: 100e6, RSSNew: 101e6},
				{Duration: 430 * ms, OK: true, RSSOld: 102e6, RSSNew: 102e6}}},
		{Mode: ModeRolling, Conns: 10000, MaxStall: 30 * ms, Floor: 300 * ms, RSSBefore: 100e6, RSSAfter: 110e6,
			Upgrades: []Upgrade{{Duration: 460 * ms, OK: true, Phases: map[string]time.Duration{"move": 451 * ms, "max_wait": 11 * ms}}}},
	}}
	md := markdown(t, s)
	for _, want := range []string{
		"- full: pause + resume within 2x the pause floor, at 10000 conns: met — 40ms against 20ms, 2.0x\n",
		"- full: longest stall within 3x that of none, at 10000 conns: missed — 61ms against 20ms, 3.0x\n",
		"- rolling: longest stall within 1.5x that of none, at 10000 conns: met — 30ms against 20ms, 1.5x\n",
		"- rolling: a parked connection waits at most 10ms, at 10000 conns: missed — longest 11ms\n",
		"- full: SIGHUP→exit within 1.5x the fd floor (largest scale), at 10000 conns: met — 450ms against 300ms, 1.5x\n",
		"- rolling: SIGHUP→exit within 1.5x the fd floor (largest scale), at 10000 conns: missed — 460ms against 300ms, 1.5x\n",
		"- rolling: the move within 1.5x the fd floor (largest scale), at 10000 conns: missed — 451ms against 300ms, 1.5x\n",
		"- full: RSS after the upgrades within 1.2x before, at 10000 conns: missed — 100.0→121.0 MB, 1.21x\n",
		"- rolling: RSS after the upgrades within 1.2x before, at 10000 conns: met — 100.0→110.0 MB, 1.10x\n",
		"- full: the new process's RSS right after a takeover within 1x the old one's, at 10000 conns: missed — 100.0→101.0 MB, 1.010x (the largest of 3)\n",
		"- rolling: the new process's RSS right after a takeover within 1x the old one's, at 10000 conns: not measured\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no line %q in\n%s", want, md)
		}
	}
	s.Runs[1].PauseResumed = 0
	if md := markdown(t, s); !strings.Contains(md, "pause floor, at 10000 conns: not measured — — against 20ms\n") {
		t.Errorf("a pause without its resume is judged:\n%s", md)
	}
	if strings.Contains(md, "accounts of state") {
		t.Errorf("a run without a seeded state is held to the state goal:\n%s", md)
	}
}

// TestStatePauseGoal: a full run with a seeded state is held to the
// 50 ms pause, next to the run without the pre-copy.
func TestStatePauseGoal(t *testing.T) {
	s := &Suite{Runs: []Run{
		{Mode: ModeFull, Conns: 1000, Accounts: 1000000, Pause: 8 * ms, Upgrades: []Upgrade{{Duration: 800 * ms, OK: true}}},
		{Mode: ModeFullNoPrecopy, Conns: 1000, Accounts: 1000000, Pause: 400 * ms, Upgrades: []Upgrade{{Duration: 600 * ms, OK: true}}},
	}}
	want := "- full: the pause with 1000000 accounts of state at most 50ms, at 1000 conns: met — 8ms (without the pre-copy: 400ms, 50.0x)\n"
	if md := markdown(t, s); !strings.Contains(md, want) {
		t.Errorf("no line %q in\n%s", want, md)
	}
	s.Runs[0].Pause = 51 * ms
	if md := markdown(t, s); !strings.Contains(md, "at 1000 conns: missed — 51ms (without") {
		t.Errorf("a 51 ms pause is not missed:\n%s", md)
	}
}
