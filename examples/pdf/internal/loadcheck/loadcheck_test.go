package loadcheck

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func run(t *testing.T, cfg Config) Report {
	t.Helper()
	return runUntil(t, context.Background(), cfg)
}

// runUntil runs the check until ctx ends (cfg.Duration zero) or its
// duration has passed.
func runUntil(t *testing.T, ctx context.Context, cfg Config) Report {
	t.Helper()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", rep)
	return rep
}

func TestCorrectServerPasses(t *testing.T) {
	t.Parallel()
	s := startFake(t, fixedRelease("v2.0-fake", 4242), nil)
	// At least 500 requests and 5 churn connections, however long a loaded
	// machine takes for them (it once sent 471 in 500 ms).
	ctx := s.until(t, 500, 5)
	rep := runUntil(t, ctx, Config{Addr: s.addr(), Conns: 4, Pipeline: 4, Rate: 2000, Churn: 50, Seed: 1})
	if !rep.OK() || !rep.Pass || len(rep.Errors) != 0 {
		t.Fatalf("correct server failed the check")
	}
	if rep.Sent < 500 || rep.RepliesOK != rep.Sent {
		t.Errorf("sent %d, ok %d: want >= 500, all ok", rep.Sent, rep.RepliesOK)
	}
	if rep.Conns != 4 || rep.FinalOK != 4 || rep.ChurnOK < 5 {
		t.Errorf("conns %d final_ok %d churn_ok %d: want 4, 4, >= 5", rep.Conns, rep.FinalOK, rep.ChurnOK)
	}
	if rep.StatsOK == 0 || rep.StatsV1 != 0 || rep.Versions["v2.0-fake"] == 0 {
		t.Errorf("stats_ok %d stats_v1 %d versions %v", rep.StatsOK, rep.StatsV1, rep.Versions)
	}
	if len(rep.Pids) != 1 || rep.Pids[0] != 4242 || rep.ConnPidsMax != 1 {
		t.Errorf("pids %v per conn max %d: want [4242], 1", rep.Pids, rep.ConnPidsMax)
	}
	if rep.LatencyMax <= 0 || rep.LatencyP50 > rep.LatencyMax {
		t.Errorf("latency p50 %v max %v", rep.LatencyP50, rep.LatencyMax)
	}
}

// An upgrading server changes version and pid under the clients: STATS
// answered unknown-command by v1 must be accepted.
func TestUpgradingServerPasses(t *testing.T) {
	t.Parallel()
	start := time.Now()
	release := func() (string, int) {
		gen := int(time.Since(start) / (40 * time.Millisecond))
		if gen%2 == 0 {
			return "v2.1", 1000 + gen
		}
		return "v1.9", 1000 + gen
	}
	s := startFake(t, release, nil)
	rep := run(t, Config{Addr: s.addr(), Conns: 8, Pipeline: 8, Rate: 4000, Churn: -1, Duration: 500 * time.Millisecond})
	if !rep.OK() {
		t.Fatalf("upgrading server failed the check")
	}
	if len(rep.Versions) != 2 || len(rep.Pids) < 3 || rep.ConnPidsMax < 3 {
		t.Errorf("versions %v pids %v per conn max %d: want both versions, >= 3 pids", rep.Versions, rep.Pids, rep.ConnPidsMax)
	}
}

// counts is the failure tally a broken server must produce.
type counts struct {
	mismatches, unexpected, missing, stalled, dropped, refused uint64
}

func countsOf(r Report) counts {
	return counts{r.Mismatches, r.Unexpected, r.Missing, r.Stalled, r.DroppedConns, r.RefusedDials}
}

// onGW0 applies f to replies on connection gw-0 only, from request 10 on,
// so every failure happens once the connection is well under way.
func onGW0(f func(n int, reply string) ([]string, bool)) fault {
	return func(gw string, n int, reply string) ([]string, bool) {
		if gw != "gw-0" || n < 10 {
			return []string{reply}, false
		}
		return f(n, reply)
	}
}

func TestBrokenServerDetected(t *testing.T) {
	t.Parallel()
	var lied atomic.Bool
	var held string // only gw-0's server goroutine touches it
	tests := []struct {
		name  string
		fault fault
		want  counts
	}{
		{"drop reply", onGW0(func(n int, r string) ([]string, bool) {
			if n == 10 {
				return nil, false
			}
			return []string{r}, false
		}), counts{missing: 1}},
		{"duplicate reply", onGW0(func(n int, r string) ([]string, bool) {
			if n == 10 {
				return []string{r, r}, false
			}
			return []string{r}, false
		}), counts{unexpected: 1}},
		{"close connection", onGW0(func(n int, r string) ([]string, bool) {
			return []string{r}, n == 10
		}), counts{dropped: 1}},
		{"wrong balance", onGW0(func(n int, r string) ([]string, bool) {
			if strings.HasPrefix(r, "BAL ") && lied.CompareAndSwap(false, true) {
				return []string{r + "1"}, false
			}
			return []string{r}, false
		}), counts{mismatches: 1}},
		{"reordered replies", onGW0(func(n int, r string) ([]string, bool) {
			switch n {
			case 10:
				held = r
				return nil, false
			case 11:
				return []string{r, held}, false
			}
			return []string{r}, false
		}), counts{missing: 1, unexpected: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startFake(t, fixedRelease("v2.0", 7), tt.fault)
			rep := run(t, Config{Addr: s.addr(), Conns: 4, Pipeline: 4, Rate: 2000, Churn: -1, Duration: 400 * time.Millisecond})
			if got := countsOf(rep); got != tt.want {
				t.Errorf("counts %+v, want %+v", got, tt.want)
			}
			if rep.OK() != (tt.want == counts{}) {
				t.Errorf("OK() = %v with counts %+v", rep.OK(), countsOf(rep))
			}
		})
	}
}

func TestStallDetected(t *testing.T) {
	t.Parallel()
	silent := onGW0(func(int, string) ([]string, bool) { return nil, false })
	s := startFake(t, fixedRelease("v2.0", 7), silent)
	rep := run(t, Config{Addr: s.addr(), Conns: 4, Pipeline: 4, Rate: 2000, Churn: -1,
		// The silent gateway stalls whatever the timeout; the others must
		// not, on a loaded machine too.
		Duration: 3 * time.Second, StallTimeout: time.Second})
	if rep.OK() || rep.Stalled != 1 || rep.Missing == 0 || rep.DroppedConns != 0 || rep.FinalOK != 3 {
		t.Errorf("stalled %d missing %d dropped %d final_ok %d: want 1, > 0, 0, 3",
			rep.Stalled, rep.Missing, rep.DroppedConns, rep.FinalOK)
	}
	// The oldest unanswered request went out at most one request after
	// the last reply, so it waited about StallTimeout: a loose bound.
	if rep.MaxStall < 100*time.Millisecond {
		t.Errorf("max stall %v, want about the stall timeout", rep.MaxStall)
	}
}

func TestRefusedDialsCounted(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rep := run(t, Config{Addr: addr, Conns: 3, Churn: 20, Duration: 300 * time.Millisecond})
	if rep.OK() || rep.Conns != 0 || rep.RefusedDials < 4 || rep.Sent != 0 {
		t.Errorf("conns %d refused %d sent %d: want 0, >= 4, 0", rep.Conns, rep.RefusedDials, rep.Sent)
	}
}

// The STATS bracket check: unknown-command is fine if the server may have
// been v1, a mismatch if v2 replies of one pid surround it.
func TestStatsUnknownCommand(t *testing.T) {
	tests := []struct {
		name           string
		after          string
		v1, mismatches uint64
		sharedPIDs     bool
	}{
		{"upgraded to v1 in between", "VERSION 3 v1.0 200", 1, 0, false},
		{"same v2 process throughout", "VERSION 3 v2.0 100", 1, 1, false},
		{"another v2 process", "VERSION 3 v2.0 300", 1, 0, false},
		// In containers every process is pid 1: v2, v1, v2 look alike.
		{"same pid in other PID namespaces", "VERSION 3 v2.0 100", 1, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &conn{cfg: &Config{SharedPIDs: tt.sharedPIDs}, st: newStats(), gw: "gw-t", pids: map[int]struct{}{}}
			m := newModel("gw-t", "acct", 1)
			for _, step := range []struct {
				p     pending
				reply string
			}{
				{m.version(), "VERSION 1 v2.0 100"},
				{m.stats(0), "ERR 2 unknown-command"},
				{m.version(), tt.after},
			} {
				c.check(step.p, step.reply, strings.Fields(step.reply))
			}
			if c.st.statsV1.Load() != tt.v1 || c.st.mismatches.Load() != tt.mismatches {
				t.Errorf("stats_v1 %d mismatches %d, want %d, %d", c.st.statsV1.Load(), c.st.mismatches.Load(), tt.v1, tt.mismatches)
			}
		})
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < 100000; i += 4 {
				h.record(time.Duration(i+1) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}, {1, 100 * time.Millisecond}} {
		got := h.quantile(tc.q)
		if d := float64(got-tc.want) / float64(tc.want); d > 0.03 || d < -0.03 {
			t.Errorf("q%v = %v, want %v within 3%%", tc.q, got, tc.want)
		}
	}
	for i := range numBuckets - 1 {
		if bucketOf(bucketLow(i)) != i || bucketLow(i+1) <= bucketLow(i) {
			t.Fatalf("bucket %d: low %d maps to %d", i, bucketLow(i), bucketOf(bucketLow(i)))
		}
	}
}
